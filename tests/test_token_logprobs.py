"""Per-token log-probs and entropies in row chunks against log_softmax of the full logits: values
and gradients (of the log-probs, the entropies and any mix), temperature, bias, a model, bf16."""

import pytest
import torch
from logit_models import LOGIT_MODELS, logit_model
from transformers import LlamaConfig, LlamaForCausalLM

import leantrain as lt
from leantrain.lean.logit_transform import IDENTITY, LogitTransform
from leantrain.lean.token_logprobs import chunked_token_logprobs, token_logprobs


def reference(hidden, head, targets, temperature=1.0, transform=IDENTITY):
    log_p = torch.log_softmax(transform(head(hidden).float()) / temperature, dim=-1)
    return log_p.gather(-1, targets[..., None])[..., 0], -(log_p.exp() * log_p).sum(-1)


def setup(bias: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(16, 50, bias=bias)
    hidden = torch.randn(3, 7, 16, generator=generator, requires_grad=True)
    targets = torch.randint(50, (3, 7), generator=generator)
    weights = torch.randn(2, 3, 7, generator=generator)  # a mix of log-prob and entropy terms
    return head, hidden, targets, weights


@pytest.mark.parametrize("chunk_rows", [1, 4, 21, 1000])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_gradients_equal_the_full_logits(chunk_rows, bias, temperature):
    head, hidden, targets, weights = setup(bias)
    want = reference(hidden, head, targets, temperature)
    want_loss = (weights[0] * want[0] + weights[1] * want[1]).sum()
    want_grads = torch.autograd.grad(want_loss, [hidden, *head.parameters()])
    got = chunked_token_logprobs(hidden, head, targets, chunk_rows, temperature)
    for a, b in zip(got, want, strict=True):
        assert a.shape == targets.shape and torch.allclose(a, b, atol=1e-5)
    got_grads = torch.autograd.grad((weights[0] * got[0] + weights[1] * got[1]).sum(), [hidden, *head.parameters()])
    for a, b in zip(got_grads, want_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("transform", [LogitTransform(scale=0.25), LogitTransform(softcap=2.0),
                                       LogitTransform(scale=3.0, softcap=5.0)], ids=str)
def test_the_models_logit_scaling_and_soft_capping_are_differentiated_through(transform):
    head, hidden, targets, weights = setup(bias=True)
    want = reference(hidden, head, targets, 0.7, transform)
    want_grads = torch.autograd.grad((weights[0] * want[0] + weights[1] * want[1]).sum(), [hidden, *head.parameters()])
    got = chunked_token_logprobs(hidden, head, targets, 4, 0.7, transform)
    got_grads = torch.autograd.grad((weights[0] * got[0] + weights[1] * got[1]).sum(), [hidden, *head.parameters()])
    for a, b in zip((*got, *got_grads), (*want, *want_grads), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("kind", LOGIT_MODELS)
def test_models_that_scale_or_cap_their_logits_give_their_own_log_probs(kind):
    """Gemma 2 (soft-capping), Cohere (logit_scale), Granite (logits_scaling): against the stock forward."""
    model = logit_model(kind)
    ids = torch.randint(64, (2, 9), generator=torch.Generator().manual_seed(1))
    log_p = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), dim=-1)
    got = token_logprobs(model, ids, chunk_rows=5)
    assert torch.allclose(got[0], log_p.gather(-1, ids[:, 1:, None])[..., 0], atol=1e-5)
    assert torch.allclose(got[1], -(log_p.exp() * log_p).sum(-1), atol=1e-5)


def test_only_log_probs_or_only_entropy_take_gradients():
    head, hidden, targets, _ = setup(bias=False)
    for pick in (0, 1):
        want = torch.autograd.grad(reference(hidden, head, targets)[pick].sum(), hidden)[0]
        got = torch.autograd.grad(chunked_token_logprobs(hidden, head, targets, 5)[pick].sum(), hidden)[0]
        assert torch.allclose(got, want, atol=1e-5)


def tiny_llama(lean: bool):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager"))
    if lean:
        lt.apply_lean(model)
    return model


@pytest.mark.parametrize("lean", [False, True])
def test_a_model_gives_what_its_full_logits_give(lean):
    ids = torch.randint(64, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    stock = tiny_llama(False)
    log_p = torch.log_softmax(stock(input_ids=ids, attention_mask=mask).logits[:, :-1], dim=-1)
    want = (log_p.gather(-1, ids[:, 1:, None])[..., 0], -(log_p.exp() * log_p).sum(-1))
    (want[0].sum() + want[1].sum()).backward()
    model = tiny_llama(lean)
    got = token_logprobs(model, ids, mask, chunk_rows=5)
    (got[0].sum() + got[1].sum()).backward()
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    grads = dict(stock.named_parameters())
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.grad, grads[name].grad, atol=1e-5), name


def test_bf16_autocast_runs_in_bf16_and_stays_close():
    head, hidden, targets, _ = setup(bias=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_token_logprobs(hidden, head, targets, 4)
        got[0].sum().backward()
    want = reference(hidden, head, targets)
    assert hidden.grad.dtype == torch.float32 and torch.allclose(got[0], want[0], atol=0.1)


def test_bad_input_is_refused():
    head, hidden, targets, _ = setup(bias=False)
    with pytest.raises(ValueError, match="does not match targets"):
        chunked_token_logprobs(hidden[:, :-1], head, targets)
    with pytest.raises(ValueError, match="chunk_rows=0"):
        chunked_token_logprobs(hidden, head, targets, 0)
    with pytest.raises(ValueError, match="temperature=0"):
        chunked_token_logprobs(hidden, head, targets, 4, 0.0)
