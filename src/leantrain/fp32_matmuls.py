"""bf16 weights on a CPU without bf16 matrix units: the products in fp32, the tensors in bf16.

PyTorch multiplies bf16 matrices on a CPU with oneDNN only where the CPU has AVX-512-BF16 or AMX
(``torch.ops.mkldnn._is_mkldnn_bf16_supported()``); elsewhere it falls back to a reference loop. On
this project's AVX2 machine (AMD EPYC, 2 threads) that ran ``F.linear``'s forward at 22 GFLOP/s and
the backward's untransposed product at 0.8 GFLOP/s, against 106–130 GFLOP/s in fp32
(BENCHMARKS.md, "16-bit trained weights on a CPU"): a step of a bf16 SmolLM2-1.7B took 20 minutes.

``fp32_matmuls_(model)`` makes every plain ``nn.Linear`` with a bf16 weight compute its three products
(output, input gradient, weight gradient) in fp32 from its bf16 operands and round the results to
bf16: what a GPU's bf16 GEMM does (fp32 accumulation, bf16 result). What backward keeps is the bf16
input and weight, as before, so the memory is the bf16 layer's plus a transient fp32 copy of one
weight and one activation. An HF model's eager or SDPA attention becomes SDPA on fp32 copies of Q, K
and V (the eager bf16 batched products ran at 0.7 GFLOP/s), its output rounded to bf16; it keeps the
fp32 Q, K, V and output instead of eager's bf16 L×L probabilities. Attention with logit soft-capping
stays eager. ``prefer_fp32_matmuls_`` does all this only where bf16 products are not native. The
sampled layers and the lean attention multiply through :func:`matmul` and :func:`linear`, which do the
same where needed; LoRA (peft's layers) is not converted.
"""

from __future__ import annotations

from functools import cache
from types import MethodType

import torch
from torch import Tensor, nn
from torch.autograd import Function

WIDENED = (torch.bfloat16, torch.float16)
FP32_ATTENTION = "leantrain_fp32_sdpa"
_CONVERTIBLE_ATTENTION = ("eager", "sdpa")


@cache
def bf16_matmul_is_native(device_type: str) -> bool:
    """Whether bf16 products run on matrix units here: always on an accelerator; on a CPU only with oneDNN's
    bf16 support (AVX-512-BF16 or AMX)."""
    return device_type != "cpu" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def needs_fp32_product(tensor: Tensor) -> bool:
    """Whether a product with this 16-bit ``tensor`` should run in fp32 (its device has no bf16 units)."""
    return tensor.dtype in WIDENED and not bf16_matmul_is_native(tensor.device.type)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``; of 16-bit tensors where they have no bf16 units, computed in fp32 and rounded back."""
    if needs_fp32_product(a):
        return torch.matmul(a.float(), b.float()).to(a.dtype)
    return torch.matmul(a, b)


def _fp32_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` of fp32 copies, rounded to ``x``'s dtype."""
    return nn.functional.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, the product in fp32 as :func:`matmul`'s."""
    if needs_fp32_product(weight):
        return _fp32_linear(x, weight, bias)
    return nn.functional.linear(x, weight, bias)


class Fp32ProductLinear(Function):
    """``F.linear(x, W, b)`` of 16-bit tensors, each product in fp32 and rounded to the tensors' dtype."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _fp32_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1]).float()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (rows @ weight.float()).to(x.dtype).view(x.shape)
        if ctx.needs_input_grad[1]:
            grad_weight = (rows.T @ x.reshape(-1, x.shape[-1]).float()).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0).to(weight.dtype)
        return grad_x, grad_weight, grad_bias


def _fp32_product_forward(self: nn.Linear, x: Tensor) -> Tensor:
    return Fp32ProductLinear.apply(x, self.weight, self.bias)


def fp32_sdpa_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                        attention_mask: Tensor | None, **kwargs) -> tuple[Tensor, None]:
    """HF's SDPA attention on fp32 copies of 16-bit Q, K, V; the output in their dtype."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    output, _ = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return output.to(query.dtype), None


def _register_fp32_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FP32_ATTENTION, fp32_sdpa_attention)
    AttentionMaskInterface.register(FP32_ATTENTION, sdpa_mask)


def _convert_attention_(model: nn.Module) -> dict[str, str]:
    """Each HF config's eager or SDPA attention -> ``FP32_ATTENTION`` (not one with logit soft-capping)."""
    changed, seen = {}, set()
    for name, module in model.named_modules():
        hf_config = getattr(module, "config", None)
        if id(hf_config) in seen or getattr(hf_config, "_attn_implementation", None) not in _CONVERTIBLE_ATTENTION:
            continue
        seen.add(id(hf_config))
        if getattr(hf_config, "attn_logit_softcapping", None):
            continue
        _register_fp32_attention()
        changed[f"{name}.config._attn_implementation".lstrip(".")] = (
            f"{hf_config._attn_implementation} -> {FP32_ATTENTION}")
        hf_config._attn_implementation = FP32_ATTENTION
    return changed


def fp32_matmuls_(model: nn.Module) -> dict[str, str]:
    """Every plain ``nn.Linear`` of ``model`` whose weight is bf16 or fp16 computes its products in fp32 (its
    class, weights and state dict unchanged), and so does an HF model's attention. Returns module name (or
    ``config._attn_implementation``) -> what changed."""
    changed = {}
    for name, module in model.named_modules():
        if type(module) is nn.Linear and module.weight.dtype in WIDENED:
            module.forward = MethodType(_fp32_product_forward, module)
            changed[name] = "products in fp32"
    if changed:
        changed.update(_convert_attention_(model))
    return changed


def prefer_fp32_matmuls_(model: nn.Module) -> dict[str, str]:
    """:func:`fp32_matmuls_` where the model's device multiplies bf16 matrices without matrix units."""
    weight = next(model.parameters(), None)
    return fp32_matmuls_(model) if weight is not None and needs_fp32_product(weight) else {}
