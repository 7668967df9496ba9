"""AdamW8bit: leantrain's AdamW with block-wise 8-bit moments (Dettmers et al. 2022, arXiv 2110.02861)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from leantrain.optim.base import LowRankOptimizer


class AdamW8bit(LowRankOptimizer):
    """AdamW in the form of the low-rank optimizers' plain groups (ψ = M/(√V+ε), bias correction in the
    step size, decoupled weight decay after the update), moments 8-bit as with ``state_bits=8``: each
    tensor of ≥ 4096 values in whole 256-value blocks keeps uint8 codes and one fp32 absmax per block
    (1 + 4/256 bytes per moment value instead of 4); smaller tensors keep fp32 moments.

    It differs from torchao's and bitsandbytes' ``AdamW8bit`` in where ε enters (they use
    M/(√V/√(1−β₂ᵗ) + ε)) and in applying weight decay after the update; the quantization is torchao's.
    Groups with a ``rank`` key are refused (use a low-rank optimizer with ``state_bits=8``).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, state_bits=8)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "rank" in param_group:
            raise ValueError(f"AdamW8bit got a group with rank={param_group['rank']!r}; it takes plain groups only: "
                             "for 8-bit moments in a subspace use GaLoreAdamW, FiraAdamW, FrugalAdamW or DCTAdamW "
                             "with state_bits=8 in the group")
        super().add_param_group(param_group)
