"""LayerNorm and RMSNorm that keep their output (+ one value per row) instead of their input.

A norm's output is the input of the next Linear layers (attention Q/K/V, the FFN's first matrix,
the LM head), which save it anyway; the stock norm saves its input too. Keeping only the output,
and recovering the normalised input as ``(y - bias) / weight``, removes one activation-sized tensor
per norm (the "in-place LayerNorm" of the WTA-CRS code, Liu et al. 2023; Apex's memory-efficient
LayerNorm). Exact within float rounding, provided no weight element is exactly zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.lean.replacement import LeanReplacement


def _sum_to_weight(t: Tensor, ndim: int) -> Tensor:
    return t.sum(dim=tuple(range(t.dim() - ndim)))


class LayerNormFromOutputFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...],
                eps: float) -> Tensor:
        out, _, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(out, weight, bias, rstd)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        out, weight, bias, rstd = ctx.saved_tensors
        dims = tuple(range(-weight.dim() if weight is not None else -rstd.dim(), 0))
        normalised = out if bias is None else out - bias
        grad_normalised = grad
        if weight is not None:
            normalised = normalised / weight
            grad_normalised = grad * weight
        grad_x = rstd * (grad_normalised - grad_normalised.mean(dims, keepdim=True)
                         - normalised * (grad_normalised * normalised).mean(dims, keepdim=True))
        grad_weight = _sum_to_weight(grad * normalised, weight.dim()) if ctx.needs_input_grad[1] else None
        grad_bias = _sum_to_weight(grad, bias.dim()) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None


class RMSNormFromOutputFunction(Function):
    """Llama / T5 RMSNorm: ``weight * (x / rms(x))``, computed in float32 like HF's LlamaRMSNorm."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
        x32 = x.float()
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        out = (x32 * rstd).to(x.dtype)
        if weight is not None:
            out = weight * out
        ctx.save_for_backward(out, weight, rstd)
        ctx.input_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        out, weight, rstd = ctx.saved_tensors
        normalised = out.float() if weight is None else out.float() / weight.float()
        grad_normalised = grad.float() if weight is None else (grad * weight).float()
        grad_x = rstd * (grad_normalised - normalised * (grad_normalised * normalised).mean(-1, keepdim=True))
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = _sum_to_weight(grad.float() * normalised, 1).to(weight.dtype)
        return grad_x.to(ctx.input_dtype), grad_weight, None


class LeanLayerNorm(LeanReplacement):
    """Drop-in for ``nn.LayerNorm`` keeping its output and 1/std per row."""

    def __init__(self, original: nn.LayerNorm) -> None:
        super().__init__(original)
        self.weight, self.bias = original.weight, original.bias
        self.normalized_shape, self.eps = tuple(original.normalized_shape), original.eps

    def forward(self, x: Tensor) -> Tensor:
        return LayerNormFromOutputFunction.apply(x, self.weight, self.bias, self.normalized_shape, self.eps)


class LeanRMSNorm(LeanReplacement):
    """Drop-in for RMSNorm modules of the ``weight * x / rms(x)`` form (``nn.RMSNorm``, HF
    ``LlamaRMSNorm``, ``T5LayerNorm``, ...) keeping their output and 1/rms per row."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__(original)
        self.weight = original.weight
        eps = getattr(original, "variance_epsilon", getattr(original, "eps", None))
        self.eps = torch.finfo(torch.float32).eps if eps is None else eps

    def forward(self, x: Tensor) -> Tensor:
        return RMSNormFromOutputFunction.apply(x, self.weight, self.eps)


def looks_like_rms_norm(module: nn.Module) -> bool:
    """An RMSNorm ``LeanRMSNorm`` reproduces: checked on a random input, so variants with another
    formula (Gemma's ``1 + weight``) are left alone."""
    is_named = type(module).__name__.endswith("RMSNorm") or type(module).__name__ == "T5LayerNorm"
    weight = getattr(module, "weight", None)
    if not is_named or not isinstance(weight, nn.Parameter) or weight.dim() != 1:
        return False
    probe = torch.randn(2, weight.numel(), generator=torch.Generator().manual_seed(0)).to(weight)
    with torch.no_grad():
        return torch.allclose(LeanRMSNorm(module)(probe), module(probe), rtol=1e-4, atol=1e-5)
