"""GaLoreAdamW: Adam in the subspace of the gradient's top singular vectors (Zhao et al. 2024, arXiv 2403.03507)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from leantrain.optim.base import LowRankOptimizer
from leantrain.optim.projectors import projected_side, svd_basis
from leantrain.optim.sharding import RowShards


class GaLoreAdamW(LowRankOptimizer):
    """GaLore (Alg. 2): every T steps (at 0, T, 2T, …) B ← top-r singular vectors of G on the smaller
    side; R = Bᵀ G; Adam on R (moments carried across refreshes); W ← W − η·α·B ψ(R).

    State per m×n weight (m ≤ n): B (m×r) and two moments (r×n), i.e. m·r + 2·n·r numbers.
    Group keys as in galore-torch: ``rank``, ``update_proj_gap`` (200), ``scale`` (α, 0.25),
    ``proj_type`` ("std"). Example::

        GaLoreAdamW([{"params": plain}, {"params": lowrank, "rank": 128}], lr=1e-3)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        update_proj_gap: int = 200,
        scale: float = 0.25,
        proj_type: str = "std",
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type
        )

    def subspace(self, state: dict[str, Any], group: dict[str, Any], shards: RowShards) -> tuple[Tensor, str]:
        """The basis B (refreshed from the SVD of the whole G when due) and the side it reduces."""
        side = projected_side(shards.shape, group["proj_type"])
        if self.refresh_due(state, group):
            state["projector"] = svd_basis(shards.full_gradient(), group["rank"], side)
        return state["projector"], side

    def low_rank_direction(
        self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], slot: tuple[int, int], shards: RowShards
    ) -> tuple[Tensor, float]:
        basis, side = self.subspace(state, group, shards)
        direction, correction = self.inner_rule(shards.project(grad, basis, side), state, group)
        return shards.project_back(direction, basis, side).mul_(group["scale"]), correction
