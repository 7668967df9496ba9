"""Dropout that keeps no mask: it saves an 8-byte seed and regenerates the mask in backward.

The stock ``nn.Dropout`` keeps a bool mask (1 byte per element); the WTA-CRS code packs it to 1 bit
(Liu et al. 2023). Regenerating it from a seed, as flash-attention does for attention dropout,
keeps 0 bits per element. Exact: backward multiplies by the very mask forward used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.lean.replacement import LeanReplacement


def draw_seed() -> Tensor:
    """A seed from the default CPU generator, so ``torch.manual_seed`` makes runs reproducible."""
    return torch.randint(2**62, (), dtype=torch.int64)


def dropout_mask(shape: torch.Size, p: float, seed: Tensor, device: torch.device) -> Tensor:
    """The keep-mask (bool, True with probability 1 - p) that ``seed`` always gives on ``device``."""
    generator = torch.Generator(device=device).manual_seed(int(seed))
    return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(1 - p, generator=generator)


def dropout_scale(p: float) -> float:
    return 0.0 if p == 1 else 1 / (1 - p)


class SeededDropoutFunction(Function):
    @staticmethod
    def forward(ctx, x: Tensor, seed: Tensor, p: float) -> Tensor:
        ctx.save_for_backward(seed)
        ctx.p = p
        return x * dropout_mask(x.shape, p, seed, x.device) * dropout_scale(ctx.p)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (seed,) = ctx.saved_tensors
        return grad * dropout_mask(grad.shape, ctx.p, seed, grad.device) * dropout_scale(ctx.p), None, None


class LeanDropout(LeanReplacement):
    """Drop-in for ``nn.Dropout``: same distribution, no mask kept for backward."""

    def __init__(self, original: nn.Dropout) -> None:
        super().__init__(original)
        self.p = original.p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        return SeededDropoutFunction.apply(x, draw_seed(), self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, mask regenerated from a seed"
