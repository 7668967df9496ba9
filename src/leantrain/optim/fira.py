"""FiraAdamW: GaLore plus the scaled full-rank residual (Chen et al. 2024, arXiv 2410.01623)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from leantrain.optim.base import LowRankOptimizer
from leantrain.optim.galore import GaLoreAdamW
from leantrain.optim.sharding import RowShards

RESIDUALS = ("paper", "official")


class FiraAdamW(GaLoreAdamW):
    """Fira: W ← W − η·c·(α·B ψ(R) + S), with S the residual G − B R scaled column-wise and limited.

    - Norm-based scaling (§4.1, Eq. 11): one factor per column of the side that is *not* reduced,
      φ_i = ‖ψ(R)_{:,i}‖ / ‖R_{:,i}‖ (rows when the columns are reduced), S = φ ⊙ (G − B R).
    - Norm-growth limiter (§4.2, Eq. 12): if ‖S_t‖ > γ·‖S_{t−1}‖ then S_t ← S_t·γ‖S_{t−1}‖/‖S_t‖,
      γ = ``limiter`` = 1.01; the post-limit norm is kept (one scalar per weight); step 0 is not limited.
    - As in the official code, ψ is M/(√V+ε) before bias correction, and the correction c scales the
      whole update (the limiter thus sees the uncorrected S).

    ``residual="paper"`` (default) uses G − B R, the part of G outside the subspace (Eq. 10), so that
    no part of G is counted twice for α ≠ 1. ``residual="official"`` uses the official code's
    G − α·B R (it projects back with α), which the paper's tables were produced with; the two agree at α = 1.
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
        limiter: float = 1.01,
        residual: str = "paper",
    ) -> None:
        LowRankOptimizer.__init__(
            self, params, lr, betas, eps, weight_decay, update_proj_gap=update_proj_gap, scale=scale,
            proj_type=proj_type, limiter=limiter, residual=residual,
        )  # fmt: skip

    def validate_low_rank_group(self, group: dict[str, Any]) -> None:
        super().validate_low_rank_group(group)
        if not (isinstance(group["limiter"], int | float) and group["limiter"] >= 1.0):
            raise ValueError(f"limiter={group['limiter']!r} must be a number >= 1 (largest growth of ‖S‖ per step)")
        if group["residual"] not in RESIDUALS:
            raise ValueError(f"residual={group['residual']!r} is not one of {RESIDUALS}")

    def low_rank_direction(
        self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], slot: tuple[int, int], shards: RowShards
    ) -> tuple[Tensor, float]:
        basis, side = self.subspace(state, group, shards)
        low_rank = shards.project(grad, basis, side)
        direction, correction = self.inner_rule(low_rank, state, group)
        in_subspace = shards.project_back(low_rank, basis, side)
        if group["residual"] == "official":
            in_subspace.mul_(group["scale"])
        kept = 0 if side == "left" else 1  # norms over the reduced side: one factor per kept row/column
        factor = direction.norm(dim=kept, keepdim=True) / (low_rank.norm(dim=kept, keepdim=True) + 1e-8)
        scaled_residual = (grad - in_subspace).mul_(factor)
        norm = shards.norm(scaled_residual)
        if "residual_norm" in state:
            shrink = torch.clamp(norm / (state["residual_norm"] + 1e-8), min=group["limiter"]) / group["limiter"]
            scaled_residual.div_(shrink)
            norm = norm / shrink
        state["residual_norm"] = norm
        update = shards.project_back(direction, basis, side).mul_(group["scale"]).add_(scaled_residual)
        return update, correction
