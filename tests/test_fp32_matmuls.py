"""bf16 weights with fp32 products (fp32_matmuls.py): the same results as a bf16 GEMM with fp32
accumulation, the layer's class and state unchanged, and what backward keeps still the bf16 tensors."""

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from leantrain.fp32_matmuls import (
    FP32_ATTENTION,
    Fp32ProductLinear,
    fp32_matmuls_,
    linear,
    matmul,
    needs_fp32_product,
)
from leantrain.memory.saved_tensors import saved_tensor_bytes
from leantrain.optim.sixteen_bit import bf16_weights_


def test_each_product_is_the_fp32_product_of_the_bf16_operands_rounded_to_bf16():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=generator).bfloat16().requires_grad_()
    weight = torch.randn(8, 16, generator=generator).bfloat16().requires_grad_()
    bias = torch.randn(8, generator=generator).bfloat16().requires_grad_()
    grad = torch.randn(3, 5, 8, generator=generator).bfloat16()
    out = Fp32ProductLinear.apply(x, weight, bias)
    out.backward(grad)
    x32, w32, g32 = x.detach().float(), weight.detach().float(), grad.float().reshape(-1, 8)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, nn.functional.linear(x32, w32, bias.detach().float()).bfloat16())
    assert torch.equal(x.grad, (g32 @ w32).bfloat16().view(3, 5, 16))
    assert torch.equal(weight.grad, (g32.T @ x32.reshape(-1, 16)).bfloat16())
    assert torch.equal(bias.grad, g32.sum(0).bfloat16())


def tiny_bf16() -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager", use_cache=False)
    return bf16_weights_(LlamaForCausalLM(config))


def test_a_converted_layer_keeps_the_bf16_tensors_for_backward():
    stock = nn.Linear(16, 8).bfloat16()
    converted = nn.Linear(16, 8).bfloat16()
    assert fp32_matmuls_(converted) == {"": "products in fp32"}
    x = torch.randn(3, 5, 16).bfloat16()
    assert saved_tensor_bytes(converted, x).total == saved_tensor_bytes(stock, x).total > 0


def test_a_converted_model_trains_as_the_bf16_one_within_bf16_rounding():
    stock, converted = tiny_bf16(), tiny_bf16()
    changed = fp32_matmuls_(converted)
    assert changed.pop("config._attn_implementation") == f"eager -> {FP32_ATTENTION}"
    assert len(changed) == 2 * 7 + 1 and all(type(converted.get_submodule(name)) is nn.Linear for name in changed)
    assert converted.state_dict().keys() == stock.state_dict().keys()
    ids = torch.randint(64, (2, 12), generator=torch.Generator().manual_seed(1))
    losses = []
    for model in (stock, converted):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.float())
    assert abs(losses[0] - losses[1]) <= 1e-2 * abs(losses[0])
    for (name, a), b in zip(stock.named_parameters(), converted.parameters(), strict=True):
        assert b.grad.dtype == torch.bfloat16
        assert (a.grad.float() - b.grad.float()).norm() <= 3e-2 * a.grad.float().norm(), name


def test_fp32_weights_are_left_alone_and_need_no_fp32_product():
    model = nn.Sequential(nn.Linear(4, 4))
    assert fp32_matmuls_(model) == {}
    assert not needs_fp32_product(model[0].weight)


def test_soft_capped_attention_stays_eager():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, head_dim=8,
                          num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    model = bf16_weights_(Gemma2ForCausalLM(config))
    assert "config._attn_implementation" not in fp32_matmuls_(model)
    assert model.config._attn_implementation == "eager"


def test_matmul_and_linear_multiply_16_bit_tensors_in_fp32_where_their_device_needs_it():
    generator = torch.Generator().manual_seed(2)
    a, b = (torch.randn(6, 16, generator=generator).bfloat16() for _ in range(2))
    widened = needs_fp32_product(a)
    assert torch.equal(matmul(a, b.T), (a.float() @ b.float().T).bfloat16() if widened else a @ b.T)
    assert torch.equal(linear(a, b), nn.functional.linear(a.float(), b.float()).bfloat16() if widened
                       else nn.functional.linear(a, b))
    assert torch.equal(matmul(a.float(), b.float().T), a.float() @ b.float().T)
