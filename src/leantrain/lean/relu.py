"""ReLU that keeps a 1-bit mask instead of its output (``QReLU`` of the WTA-CRS code, Liu et al. 2023).

The stock ReLU saves its output. When the next op saves that same tensor (a Linear right after it)
this changes nothing; when something in between makes a new tensor (dropout in T5's FFN, or a
sampled Linear that keeps only some rows) it saves 31 of every 32 bits. Exact: the gradient is
``grad * (output > 0)`` either way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.lean.bits import pack_bits, unpack_bits
from leantrain.lean.replacement import LeanReplacement


class PackedMaskReLUFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = torch.relu(x)
        ctx.save_for_backward(pack_bits(out > 0))
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (packed,) = ctx.saved_tensors
        return grad * unpack_bits(packed, ctx.shape)


class LeanReLU(LeanReplacement):
    """Drop-in for ``nn.ReLU`` keeping a bit-packed mask for backward."""

    def __init__(self, original: nn.ReLU) -> None:
        super().__init__(original)

    def forward(self, x: Tensor) -> Tensor:
        return PackedMaskReLUFunction.apply(x) if torch.is_grad_enabled() else torch.relu(x)
