"""FrugalAdamW: Adam on a subspace, signSGD on the rest (Zmushko et al., ICML 2025, arXiv 2411.07837)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from leantrain.optim.base import LowRankOptimizer
from leantrain.optim.projectors import (
    coordinate_basis,
    projected_side,
    projected_size,
    random_coordinates,
    random_orthonormal_basis,
    seeded_generator,
    svd_basis,
)
from leantrain.optim.sharding import RowShards

SUBSPACES = ("svd", "random", "randperm", "blocks")
BLOCK_ORDERS = ("random", "descending")


@functools.lru_cache(maxsize=256)
def active_blocks(count: int, density: float, order: str, seed: int, group_index: int, refresh: int) -> frozenset[int]:
    """Positions of the round(ρ·count) tensors that are state-full during refresh period ``refresh``.

    "random" draws a fresh set each period; "descending" walks windows from the last tensor to the first
    (the order of FRUGAL's pre-training scripts, like BAdam's block coordinate descent).
    """
    active = round(density * count)
    if active == 0:
        return frozenset()
    if order == "random":
        order_drawn = torch.randperm(count, generator=seeded_generator(seed, group_index, refresh))
        return frozenset(order_drawn[:active].tolist())
    windows = -(-count // active)
    end = count - (refresh % windows) * active
    return frozenset(range(max(0, end - active), end))


class FrugalAdamW(LowRankOptimizer):
    """FRUGAL: split G = G_full + G_free; Adam on the state-full part, signSGD on the state-free part.

    Update of a low-rank-group weight (official ``proj_optimizer_templates.py``):
    W ← W − η·α·(c·Bψ(BᵀG) + s·sign(G − BBᵀG)), α = ``scale`` (``proj_params_lr_scale``),
    s = ``inactive_lr_scale``. The subspace (``subspace`` key) is refreshed every T steps and the Adam
    statistics are reset then (``reset_statistics=True``):

    - "svd": top-``rank`` singular vectors (as GaLore); "random": a random orthonormal basis;
      "randperm": ``rank`` random rows/columns;
    - "blocks": whole tensors — round(``density``·#tensors) of the group run Adam, the others pure
      signSGD with no state (``rank`` is unused), chosen by ``block_order``.

    Random choices are a function of (``seed``, slot, refresh index): same on every rank, same on resume.
    Weight decay is applied after the update, as in GaLore (FRUGAL's code applies it before: O(η²λ)).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        update_proj_gap: int = 200,
        scale: float = 1.0,
        proj_type: str = "std",
        subspace: str = "svd",
        density: float = 0.25,
        block_order: str = "random",
        inactive_lr_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type,
            subspace=subspace, density=density, block_order=block_order, inactive_lr_scale=inactive_lr_scale,
            seed=seed,
        )  # fmt: skip

    def uses_rank(self, group: dict[str, Any]) -> bool:
        return group["subspace"] != "blocks"

    def validate_low_rank_group(self, group: dict[str, Any]) -> None:
        if group["subspace"] not in SUBSPACES:
            raise ValueError(f"subspace={group['subspace']!r} is not one of {SUBSPACES}")
        if not (isinstance(group["density"], int | float) and 0.0 <= group["density"] <= 1.0):
            raise ValueError(f"density={group['density']!r} must be a fraction in [0, 1]")
        if group["block_order"] not in BLOCK_ORDERS:
            raise ValueError(f"block_order={group['block_order']!r} is not one of {BLOCK_ORDERS}")
        if not (isinstance(group["inactive_lr_scale"], int | float) and group["inactive_lr_scale"] >= 0):
            raise ValueError(f"inactive_lr_scale={group['inactive_lr_scale']!r} must be a number >= 0")
        if not isinstance(group["seed"], int):
            raise ValueError(f"seed={group['seed']!r} must be an integer")
        super().validate_low_rank_group(group)

    def subspace_basis(
        self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], shards: RowShards, side: str,
        draw: tuple[int, ...],
    ) -> Tensor:
        """The basis B for this period, drawn anew when a refresh is due; "randperm" stores only indices."""
        kind, rank, size = group["subspace"], group["rank"], projected_size(shards.shape, group["proj_type"])
        if self.refresh_due(state, group):
            if kind == "svd":
                state["projector"] = svd_basis(shards.full_gradient(), rank, side)
            elif kind == "random":
                basis = random_orthonormal_basis(size, rank, seeded_generator(group["seed"], *draw))
                state["projector"] = basis.to(device=grad.device, dtype=grad.dtype)
            else:
                state["indices"] = random_coordinates(size, rank, seeded_generator(group["seed"], *draw))
        if kind == "randperm":
            return coordinate_basis(state["indices"], size, grad.dtype, grad.device)
        return state["projector"]

    def low_rank_direction(
        self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], slot: tuple[int, int], shards: RowShards
    ) -> tuple[Tensor, float]:
        if self.refresh_due(state, group):
            self.reset_inner_state(state)
        refresh = (state["step"] - 1) // group["update_proj_gap"]
        state_free_scale = group["inactive_lr_scale"]
        if group["subspace"] == "blocks":
            group_index, position = slot
            active = active_blocks(
                len(group["params"]), group["density"], group["block_order"], group["seed"], group_index, refresh
            )
            if position not in active:
                return grad.sign().mul_(state_free_scale), group["scale"]
            direction, correction = self.inner_rule(grad, state, group)
            return direction.mul_(correction), group["scale"]
        side = projected_side(shards.shape, group["proj_type"])
        basis = self.subspace_basis(grad, state, group, shards, side, (*slot, refresh))
        low_rank = shards.project(grad, basis, side)
        direction, correction = self.inner_rule(low_rank, state, group)
        state_free = grad - shards.project_back(low_rank, basis, side)
        update = shards.project_back(direction, basis, side).mul_(correction)
        return update.add_(state_free.sign_(), alpha=state_free_scale), group["scale"]
