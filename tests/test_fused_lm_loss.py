"""The fused LM-head loss (lean/lm_loss.py) against ``F.cross_entropy`` on the full logits: the loss and the
gradients of the hidden states, the head's weight and bias, over chunk sizes, ignored rows, label smoothing, the
z-loss and the models' own logit transforms; the stored gradients scaled by the upstream gradient, kept for one
backward; and whole models whose logits are scaled or soft-capped."""

import pytest
import torch
from logit_models import LOGIT_MODELS, logit_model
from torch import nn

import leantrain as lt
from leantrain.lean import CHUNKED_LOSS_ONLY
from leantrain.lean.lm_loss import CROSS_ENTROPY, IGNORE_INDEX, LossShape, chunked_causal_lm_loss
from leantrain.lean.logit_transform import LogitTransform


def setup(bias: bool = True, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(16, 50, bias=bias)
    hidden = torch.randn(3, 7, 16, generator=generator).requires_grad_()
    labels = torch.randint(50, (3, 7), generator=generator)
    labels[1, :4] = IGNORE_INDEX  # a prompt under SFT's answer mask
    return head, hidden, labels


def reference_loss(hidden, head, labels, shape: LossShape = CROSS_ENTROPY, divisor=None):
    """HF's shifted causal-LM loss on the full logits, with F.cross_entropy's label smoothing and PaLM's z-loss."""
    logits = shape.transform(head(hidden).float())[:, :-1].reshape(-1, head.out_features)
    targets = labels[:, 1:].reshape(-1)
    counted = targets != IGNORE_INDEX
    divisor = counted.sum() if divisor is None else divisor
    loss = nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum",
                                       label_smoothing=shape.label_smoothing)
    return (loss + shape.z_loss * (torch.logsumexp(logits, -1)[counted] ** 2).sum()) / divisor


def gradients(loss, hidden, head):
    return torch.autograd.grad(loss, [hidden, *head.parameters()])


@pytest.mark.parametrize("chunk_rows", [1, 5, 13, 1000])
@pytest.mark.parametrize("shape", [LossShape(), LossShape(label_smoothing=0.1), LossShape(z_loss=1e-2),
                                   LossShape(LogitTransform(scale=0.3, softcap=2.0), 0.2, 1e-3)], ids=str)
def test_loss_and_gradients_equal_cross_entropy_on_the_full_logits(chunk_rows, shape):
    head, hidden, labels = setup()
    want = reference_loss(hidden, head, labels, shape)
    want_grads = gradients(want, hidden, head)
    got = chunked_causal_lm_loss(hidden, head, labels, chunk_rows, shape=shape)
    torch.testing.assert_close(got, want)
    for a, b in zip(gradients(got, hidden, head), want_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_num_items_in_batch_divides_instead_of_the_counted_tokens():
    head, hidden, labels = setup(bias=False)
    want = reference_loss(hidden, head, labels, divisor=40)
    got = chunked_causal_lm_loss(hidden, head, labels, 4, num_items_in_batch=40)
    torch.testing.assert_close(got, want)
    for a, b in zip(gradients(got, hidden, head), gradients(want, hidden, head), strict=True):
        torch.testing.assert_close(a, b)


def test_backward_scales_the_stored_gradients_once():
    head, hidden, labels = setup()
    want = gradients(3.5 * reference_loss(hidden, head, labels), hidden, head)
    loss = chunked_causal_lm_loss(hidden, head, labels, 4)
    (3.5 * loss).backward(retain_graph=True)
    for a, b in zip((hidden.grad, head.weight.grad, head.bias.grad), want, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="one backward only"):
        loss.backward()


def test_without_autograd_it_is_the_loss_alone():
    head, hidden, labels = setup()
    with torch.no_grad():
        got = chunked_causal_lm_loss(hidden, head, labels, 4)
    torch.testing.assert_close(got, reference_loss(hidden, head, labels))
    assert got.grad_fn is None


def test_a_16_bit_head_with_bias_gives_its_gradients_in_its_dtype():
    """A bf16 head and bf16 hidden states against the fp32 loss of the same values: the gradients come back in
    bf16, within its rounding (they are summed over the chunks in fp32)."""
    head, hidden, labels = setup(seed=1)
    wide_head = nn.Linear(16, 50)
    wide_head.load_state_dict(head.state_dict())
    head.bfloat16()
    wide_head.load_state_dict({key: value.float() for key, value in head.state_dict().items()})
    narrow = hidden.detach().bfloat16().requires_grad_()
    wide = narrow.detach().float().requires_grad_()
    want = reference_loss(wide, wide_head, labels)
    want_grads = gradients(want, wide, wide_head)
    got = chunked_causal_lm_loss(narrow, head, labels, 4)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=0)
    for a, b in zip(gradients(got, narrow, head), want_grads, strict=True):
        assert a.dtype == torch.bfloat16
        assert (a.float() - b).norm() <= 1e-2 * b.norm()


def test_bad_loss_shapes_are_refused():
    with pytest.raises(ValueError, match="label_smoothing=1"):
        LossShape(label_smoothing=1)
    with pytest.raises(ValueError, match=r"z_loss=-0\.1"):
        LossShape(z_loss=-0.1)


@pytest.mark.parametrize("kind", LOGIT_MODELS)
def test_models_that_scale_or_cap_their_logits_train_on_their_own_loss(kind):
    """Gemma 2, Cohere and Granite with the fused head: the loss and every gradient of the stock model."""
    ids = torch.randint(64, (2, 9), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX
    stock, lean = logit_model(kind), logit_model(kind)
    changed = lt.apply_lean(lean, config=CHUNKED_LOSS_ONLY)
    assert "forward" in changed
    want = stock(input_ids=ids, labels=labels).loss
    want.backward()
    got = lean(input_ids=ids, labels=labels).loss
    got.backward()
    torch.testing.assert_close(got, want)
    grads = dict(stock.named_parameters())
    for name, parameter in lean.named_parameters():
        torch.testing.assert_close(parameter.grad, grads[name].grad, atol=1e-6, rtol=1e-5, msg=name)
