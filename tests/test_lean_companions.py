"""Every exact lean companion against the stock module it replaces: same outputs, same gradients,
fewer bytes saved for backward."""

import pytest
import torch
from torch import nn
from transformers.models.bert.modeling_bert import eager_attention_forward as bert_eager
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm
from transformers.models.llama.modeling_llama import eager_attention_forward as llama_eager

from leantrain.lean import LeanConfig
from leantrain.lean.attention import recomputed_attention_forward
from leantrain.lean.bits import pack_bits, unpack_bits
from leantrain.lean.dropout import LeanDropout, draw_seed, dropout_mask
from leantrain.lean.norms import LeanLayerNorm, LeanRMSNorm, looks_like_rms_norm
from leantrain.lean.recompute import RecomputedModule
from leantrain.lean.relu import LeanReLU
from leantrain.memory import saved_tensor_bytes, track_saved_tensors


def grads(fn, inputs, grad_out):
    """Output of ``fn`` and the gradients of ``(output * grad_out).sum()`` w.r.t. ``inputs``."""
    out = fn()
    return out, torch.autograd.grad(out, inputs, grad_out)


def assert_close_all(a, b, tol=1e-5):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def test_bits_round_trip():
    mask = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == 14
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_relu_bit_identical_and_one_bit_per_element():
    torch.manual_seed(0)
    x = torch.randn(8, 64, requires_grad=True)
    g = torch.randn(8, 64)
    stock, stock_grad = grads(lambda: nn.ReLU()(x), [x], g)
    lean, lean_grad = grads(lambda: LeanReLU(nn.ReLU())(x), [x], g)
    assert torch.equal(stock, lean) and torch.equal(stock_grad[0], lean_grad[0])
    assert saved_tensor_bytes(LeanReLU(nn.ReLU()), x).total == 8 * 64 // 8


def test_dropout_backward_uses_the_forward_mask_and_keeps_no_mask():
    torch.manual_seed(0)
    x = torch.randn(16, 256, requires_grad=True)
    g = torch.randn(16, 256)
    layer = LeanDropout(nn.Dropout(0.25))
    out, (grad,) = grads(lambda: layer(x), [x], g)
    kept = out != 0
    assert torch.equal(grad, g * kept * (1 / 0.75))
    assert torch.equal(out, x * kept * (1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    assert saved_tensor_bytes(layer, x).total == 8  # the seed
    layer.eval()
    assert layer(x) is x


def test_dropout_mask_is_reproducible_from_the_seed():
    torch.manual_seed(1)
    seed = draw_seed()
    first = dropout_mask(torch.Size([4, 100]), 0.5, seed, torch.device("cpu"))
    assert torch.equal(first, dropout_mask(torch.Size([4, 100]), 0.5, seed, torch.device("cpu")))


def test_layer_norm_matches_stock_and_keeps_no_input():
    torch.manual_seed(0)
    stock = nn.LayerNorm(32)
    nn.init.normal_(stock.weight)
    nn.init.normal_(stock.bias)
    x = torch.randn(4, 8, 32, requires_grad=True)
    g = torch.randn(4, 8, 32)
    params = [x, stock.weight, stock.bias]
    out, expected = grads(lambda: stock(x), params, g)
    lean_out, got = grads(lambda: LeanLayerNorm(stock)(x), params, g)
    assert torch.equal(out, lean_out)
    assert_close_all(got, expected)
    # keeps its output (which the next Linear keeps anyway) and one 1/std per row
    assert saved_tensor_bytes(LeanLayerNorm(stock), x).total == (4 * 8 * 32 + 4 * 8) * 4


@pytest.mark.parametrize("make", [lambda: LlamaRMSNorm(32, eps=1e-6), lambda: nn.RMSNorm(32, eps=1e-6)])
def test_rms_norm_matches_stock(make):
    torch.manual_seed(0)
    stock = make()
    nn.init.normal_(stock.weight)
    assert looks_like_rms_norm(stock)
    x = torch.randn(4, 8, 32, requires_grad=True)
    g = torch.randn(4, 8, 32)
    out, expected = grads(lambda: stock(x), [x, stock.weight], g)
    lean_out, got = grads(lambda: LeanRMSNorm(stock)(x), [x, stock.weight], g)
    torch.testing.assert_close(out, lean_out)
    assert_close_all(got, expected)


def test_rms_norm_variants_with_another_formula_are_not_taken():
    assert not looks_like_rms_norm(GemmaRMSNorm(32))  # weight is applied as (1 + weight)
    assert not looks_like_rms_norm(nn.LayerNorm(32))


class _Heads(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups


@pytest.mark.parametrize(("eager", "kv_heads"), [(bert_eager, 4), (llama_eager, 2)])
def test_attention_matches_eager_without_keeping_probabilities(eager, kv_heads):
    torch.manual_seed(0)
    b, heads, length, dim = 2, 4, 16, 8
    q = torch.randn(b, heads, length, dim, requires_grad=True)
    k = torch.randn(b, kv_heads, length, dim, requires_grad=True)
    v = torch.randn(b, kv_heads, length, dim, requires_grad=True)
    mask = torch.zeros(b, 1, length, length)
    mask[0, ..., -5:] = torch.finfo(torch.float32).min  # padding in the first sequence
    module = _Heads(heads // kv_heads).eval()
    g = torch.randn(b, length, heads, dim)
    expected = grads(lambda: eager(module, q, k, v, mask, scaling=dim**-0.5)[0], [q, k, v], g)
    got = grads(lambda: recomputed_attention_forward(module, q, k, v, mask, scaling=dim**-0.5)[0], [q, k, v], g)
    assert_close_all((got[0], *got[1]), (expected[0], *expected[1]))

    module.train()
    with track_saved_tensors(module) as lean_saved:
        recomputed_attention_forward(module, q, k, v, mask, scaling=dim**-0.5, dropout=0.1)
    with track_saved_tensors(module) as eager_saved:
        eager(module, q, k, v, mask, scaling=dim**-0.5, dropout=0.1)
    qkv_and_mask = (q.numel() + k.numel() + v.numel() + mask.numel()) * 4
    assert lean_saved.total == qkv_and_mask + 8  # and the dropout seed
    probabilities = b * heads * length * length
    assert eager_saved.total >= qkv_and_mask + probabilities * (4 + 1 + 4)  # probs, dropout mask, dropped probs


def test_attention_dropout_backward_uses_the_forward_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 4, requires_grad=True) for _ in range(3))
    module = _Heads(1).train()
    g = torch.randn(1, 8, 2, 4)
    torch.manual_seed(5)
    seed = draw_seed()
    keep = dropout_mask(torch.Size([1, 2, 8, 8]), 0.3, seed, torch.device("cpu"))

    def reference():
        probs = torch.softmax(q @ k.transpose(2, 3) * 0.5, dim=-1) * keep / 0.7
        return (probs @ v).transpose(1, 2)

    torch.manual_seed(5)
    got = grads(lambda: recomputed_attention_forward(module, q, k, v, None, scaling=0.5, dropout=0.3)[0], [q, k, v], g)
    expected = grads(reference, [q, k, v], g)
    assert_close_all((got[0], *got[1]), (expected[0], *expected[1]))


@pytest.mark.parametrize("block", ["llama", "gpt2"])
def test_recomputed_mlp_is_bit_identical_even_with_dropout(block):
    from transformers import GPT2Config, LlamaConfig

    torch.manual_seed(0)
    if block == "llama":
        mlp = LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=64))
    else:
        mlp = GPT2MLP(128, GPT2Config(n_embd=32, resid_pdrop=0.2))
    mlp.train()
    x = torch.randn(2, 8, 32, requires_grad=True)
    g = torch.randn(2, 8, 32)
    params = [x, *mlp.parameters()]
    torch.manual_seed(3)
    out, expected = grads(lambda: mlp(x), params, g)
    lean = RecomputedModule(mlp)
    torch.manual_seed(3)
    lean_out, got = grads(lambda: lean(x), params, g)
    assert torch.equal(out, lean_out)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    assert saved_tensor_bytes(lean, x).total < 2 * 8 * 32 * 4 + 6000  # its input (a leaf here) + RNG state


def test_lean_config_validates():
    with pytest.raises(ValueError, match="dropout"):
        LeanConfig(dropout="yes")
    with pytest.raises(ValueError, match="lm_loss_chunk_logits"):
        LeanConfig(lm_loss_chunk_logits=0)


def test_activation_recomputed_from_the_linear_input_is_bit_identical_and_keeps_nothing():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertIntermediate

    from leantrain.lean import apply_lean

    torch.manual_seed(0)
    block = BertIntermediate(BertConfig(hidden_size=32, intermediate_size=64))
    x = torch.randn(2, 8, 32, requires_grad=True)
    g = torch.randn(2, 8, 64)
    params = [x, *block.parameters()]
    out, expected = grads(lambda: block(x), params, g)
    stock_saved = saved_tensor_bytes(block, x).by_name
    changed = apply_lean(block, LeanConfig(recompute_mlp=False))
    assert changed == {"intermediate_act_fn": "ActivationFromLinearInput(GELUActivation)"}
    lean_out, got = grads(lambda: block(x), params, g)
    assert torch.equal(out, lean_out)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert stock_saved["intermediate_act_fn"] == 2 * 8 * 64 * 4
    assert "intermediate_act_fn" not in saved_tensor_bytes(block, x).by_name  # x is kept by the Linear already


def test_lean_llama_under_bf16_autocast_matches_stock_under_the_same_autocast():
    """HF's rotary embedding leaves Q and K in fp32 and V in bf16 under autocast; lean attention and
    the chunked loss cast as eager's matmuls would, so backward runs and agrees within bf16 rounding."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    from leantrain.lean import apply_lean

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    stock = LlamaForCausalLM(config)
    lean = copy.deepcopy(stock)
    apply_lean(lean)
    ids = torch.randint(64, (2, 12))

    def loss_and_grads(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {name: p.grad for name, p in model.named_parameters()}

    stock_loss, stock_grads = loss_and_grads(stock)
    lean_loss, lean_grads = loss_and_grads(lean)
    torch.testing.assert_close(lean_loss, stock_loss, rtol=1e-2, atol=1e-2)
    for name, grad in stock_grads.items():
        assert lean_grads[name].dtype == torch.float32
        assert (lean_grads[name] - grad).norm() <= 0.03 * grad.norm(), name  # a few bf16 roundings
