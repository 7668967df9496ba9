"""Where row importance comes from, before the output gradient dY of this step exists.

The variance-optimal CRS probabilities are ``p_i ∝ ‖X_i‖·‖dY_i‖`` (Drineas et al. 2006), but rows
are chosen in the forward pass. Each source gives a score per row from the current ``‖X_i‖`` and,
for the stateful ones, an estimate of ``‖dY_i‖`` learnt from earlier backward passes:

* ``norm``    — ``‖X_i‖`` alone (stateless).
* ``cached``  — × the ``‖dY‖`` this very example had at this position the last time it was seen,
  keyed by the sample ids the user passes in (the WTA-CRS paper's method, Liu et al. 2023, §3).
* ``running`` — × a running average of ``‖dY‖`` per position (needs no sample ids): it learns,
  for instance, that late positions, often padding, carry little gradient.

A gradient estimate can be zero where the true gradient is not (a stale cache, an unseen
position). To keep every estimator unbiased, no row with ``‖X_i‖ > 0`` may get zero probability,
so every learnt ``‖dY‖`` estimate is floored at ``GRADIENT_FLOOR`` times its mean.

Rows are viewed as ``[batch, positions]``: dimension 0 of the layer input indexes examples and
all other leading dimensions are flattened into positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leantrain.names import SOURCES

GRADIENT_FLOOR = 0.05
RUNNING_DECAY = 0.9


def with_floor(grad_norms: Tensor) -> Tensor:
    """Raise every estimate to at least GRADIENT_FLOOR × the mean estimate (1 where all are zero)."""
    mean = grad_norms.mean()  # tested on the device (torch.where), not on the host: no synchronisation
    return torch.where(mean > 0, grad_norms.clamp_min(GRADIENT_FLOOR * mean), torch.ones_like(grad_norms))


class RowNorms:
    """Importance ``‖X_i‖``: stateless."""

    name = "norm"
    needs_grad_norms = False

    def scores(self, x_norms: Tensor, sample_ids: Tensor | None) -> Tensor:
        return x_norms

    def observe(self, grad_norms: Tensor, sample_ids: Tensor | None) -> None:
        """Stateless: nothing to learn."""

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Stateless: nothing to restore."""


class RunningGradNorms:
    """Importance ``‖X_i‖ · ḡ_pos``: ḡ is an exponential moving average of ``‖dY‖`` per position."""

    name = "running"
    needs_grad_norms = True

    def __init__(self, decay: float = RUNNING_DECAY) -> None:
        self.decay = decay
        self.average: Tensor | None = None  # [positions], float32, on the layer's device

    def scores(self, x_norms: Tensor, sample_ids: Tensor | None) -> Tensor:
        if self.average is None:
            return x_norms
        positions = x_norms.shape[1]
        known = self.average[:positions]
        fill = self.average.mean().expand(positions - known.numel())
        estimate = with_floor(torch.cat([known, fill]).to(x_norms.device))
        return x_norms * estimate

    def observe(self, grad_norms: Tensor, sample_ids: Tensor | None) -> None:
        batch_mean = grad_norms.float().mean(0)
        if self.average is None:
            self.average = batch_mean
            return
        if batch_mean.numel() > self.average.numel():
            grown = self.average.mean().expand(batch_mean.numel() - self.average.numel())
            self.average = torch.cat([self.average, grown])
        head = self.average[: batch_mean.numel()]
        head.mul_(self.decay).add_(batch_mean.to(head.device), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.average is None else {"average": self.average.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.average = state.get("average")


class CachedGradNorms:
    """Importance ``‖X_i‖ · g[id, pos]``: the ``‖dY‖`` each example had when it was last seen.

    The table lives in host memory as bfloat16 (as in the WTA-CRS code), one row per sample id,
    NaN where nothing has been seen yet; unseen entries are filled with the batch's mean estimate.
    """

    name = "cached"
    needs_grad_norms = True

    def __init__(self) -> None:
        self.table = torch.full((0, 0), float("nan"), dtype=torch.bfloat16)

    def _grow(self, rows: int, positions: int) -> None:
        old_rows, old_positions = self.table.shape
        if rows <= old_rows and positions <= old_positions:
            return
        grown = torch.full(
            (max(rows, old_rows), max(positions, old_positions)), float("nan"), dtype=torch.bfloat16
        )
        grown[:old_rows, :old_positions] = self.table
        self.table = grown

    @staticmethod
    def _checked(sample_ids: Tensor | None, batch: int) -> Tensor:
        if sample_ids is None:
            raise ValueError(
                "importance='cached' needs sample ids: run the forward pass (and the backward pass, where "
                "lean recompute reruns blocks) inside `with leantrain.sample_ids(model, ids):` with one "
                "integer id per example"
            )
        ids = sample_ids.detach().to("cpu", torch.long).flatten()
        if ids.numel() != batch:
            raise ValueError(f"sample ids: got {ids.numel()} ids for a batch of {batch} examples")
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError(f"sample ids must be non-negative integers, got min {int(ids.min())}")
        return ids

    def scores(self, x_norms: Tensor, sample_ids: Tensor | None) -> Tensor:
        batch, positions = x_norms.shape
        ids = self._checked(sample_ids, batch)
        self._grow(int(ids.max()) + 1 if ids.numel() else 0, positions)
        cached = self.table[ids, :positions].float()
        seen = ~torch.isnan(cached)
        if not seen.any():
            return x_norms
        estimate = torch.where(seen, cached, cached[seen].mean())
        return x_norms * with_floor(estimate).to(x_norms.device)

    def observe(self, grad_norms: Tensor, sample_ids: Tensor | None) -> None:
        batch, positions = grad_norms.shape
        ids = self._checked(sample_ids, batch)
        self._grow(int(ids.max()) + 1 if ids.numel() else 0, positions)
        self.table[ids, :positions] = grad_norms.detach().to("cpu", torch.bfloat16)

    def state_dict(self) -> dict[str, Tensor]:
        return {"table": self.table.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.table = state["table"]


ImportanceSource = RowNorms | RunningGradNorms | CachedGradNorms


def make_source(name: str) -> ImportanceSource:
    """A fresh importance source by name: one of SOURCES."""
    sources = {"norm": RowNorms, "running": RunningGradNorms, "cached": CachedGradNorms}
    if name not in sources:
        raise ValueError(f"importance={name!r} is not one of {SOURCES}")
    return sources[name]()
