"""DCTAdamW: SVD-free low-rank Adam over a fixed DCT basis (Modoranu et al. 2025, arXiv 2505.17967)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from leantrain.optim.base import LowRankOptimizer
from leantrain.optim.projectors import dct_basis, l1_scores, projected_side, select, top_indices
from leantrain.optim.sharding import RowShards


class DCTAdamW(LowRankOptimizer):
    """Low-rank Adam whose subspace is r columns of one orthonormal DCT basis Q (d×d) per size d.

    At a refresh (every T steps; default every step, as cheap as one matmul) the coefficients
    C = Qᵀ G (or G Q) are scored per basis vector by ℓ1 norm and the top r kept: R = C[i_t] is
    the low-rank gradient, with no second matmul. Adam on R; W ← W − η·c·α·Q[:, i_t] ψ(R).
    Only the r int32 indices are stored per weight (plus the moments); Q is built once per
    (size, dtype, device) and shared by all weights (see :meth:`shared_tensors`). Moments carry over
    refreshes (the paper's ``rotate_subspace=False`` default).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        update_proj_gap: int = 1,
        scale: float = 1.0,
        proj_type: str = "std",
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type
        )
        self.bases: dict[tuple[int, Any, Any], Tensor] = {}

    def shared_basis(self, size: int, like: Tensor) -> Tensor:
        """The d×d DCT basis, built on first use for this size, dtype and device."""
        key = (size, like.dtype, like.device)
        if key not in self.bases:
            self.bases[key] = dct_basis(size, like.dtype, like.device)
        return self.bases[key]

    def shared_tensors(self) -> list[Tensor]:
        return list(self.bases.values())

    def low_rank_direction(
        self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], slot: tuple[int, int], shards: RowShards
    ) -> tuple[Tensor, float]:
        side = projected_side(shards.shape, group["proj_type"])
        basis = self.shared_basis(shards.shape[0] if side == "left" else shards.shape[1], grad)
        if self.refresh_due(state, group):
            coefficients = shards.project(grad, basis, side)
            scores = l1_scores(coefficients, side)
            if side == "right":  # G Q holds this rank's rows of G: the scores sum over every rank's rows
                scores = shards.sum(scores)
            state["indices"] = top_indices(scores, group["rank"])
            low_rank = select(coefficients, state["indices"], side)
        else:
            low_rank = shards.project(grad, basis.index_select(1, state["indices"]), side)
        direction, correction = self.inner_rule(low_rank, state, group)
        back = shards.project_back(direction, basis.index_select(1, state["indices"]), side)
        return back.mul_(group["scale"]), correction
