"""leantrain's AdamW: the low-rank optimizers' plain-group rule on its own, with fp32 or block-wise 8-bit moments
(Dettmers et al. 2022, arXiv 2110.02861), on fp32 or bf16 weights (sixteen_bit.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from leantrain.optim.base import LowRankOptimizer


class AdamW(LowRankOptimizer):
    """AdamW in the form of the low-rank optimizers' plain groups (ψ = M/(√V+ε), bias correction in the
    step size, decoupled weight decay after the update). ``state_bits=8``: each tensor of ≥ 4096 values in
    whole 256-value blocks keeps uint8 codes and one fp32 absmax per block (1 + 4/256 bytes per moment value
    instead of 4); smaller tensors keep fp32 moments. ``torch.optim.AdamW`` is what leantrain builds for
    fp32 weights with fp32 moments; this one serves the rest (8-bit moments, bf16 weights).

    It differs from torchao's and bitsandbytes' ``AdamW8bit`` in where ε enters (they use
    M/(√V/√(1−β₂ᵗ) + ε)) and in applying weight decay after the update; the quantization is torchao's.
    Groups with a ``rank`` key are refused (use a low-rank optimizer).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        state_bits: int = 32,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, state_bits=state_bits)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "rank" in param_group:
            raise ValueError(f"{type(self).__name__} got a group with rank={param_group['rank']!r}; it takes plain "
                             "groups only: for moments in a subspace use GaLoreAdamW, FiraAdamW, FrugalAdamW or "
                             "DCTAdamW (with state_bits=8 in the group for 8-bit ones)")
        super().add_param_group(param_group)


class AdamW8bit(AdamW):
    """:class:`AdamW` with 8-bit moments (``state_bits=8``)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, state_bits=8)
