"""Loss-curve prediction across schedules: the scaling law with LR annealing (Tissue et al. 2024).

    L(s) = L0 + A·S1(s)^(−α) − C·S2(s)

S1 is the forward area Σ_{i≤s} η_i; S2 the annealing area Σ_{i≤s} m_i with momentum
m_i = λ·m_{i−1} + (η_{i−1} − η_i). Warmup steps (those before the lr first reaches its peak) count as
the peak lr, following the official code. Fit (L0, A, α, C) on the logged losses of one or two runs,
then :meth:`LossCurveFit.predict` the curve of any other lr sequence.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


def annealing_areas(lrs: Sequence[float], decay: float = 0.999) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) after each of the ``len(lrs)`` steps; ``lrs[i]`` is the lr of update i + 1."""
    eta = np.asarray(lrs, dtype=np.float64).copy()
    peak = int(np.argmax(eta))
    eta[:peak] = eta[peak]
    drops = -np.diff(eta, prepend=eta[0])
    momentum, m = np.empty_like(eta), 0.0
    for i, drop in enumerate(drops):
        m = decay * m + drop
        momentum[i] = m
    return np.cumsum(eta), np.cumsum(momentum)


@dataclass(frozen=True)
class LoggedRun:
    """One run: the lr of every update, and losses measured after ``steps[j]`` updates."""

    lrs: Sequence[float]
    steps: Sequence[int]
    losses: Sequence[float]

    @classmethod
    def from_metrics(cls, records: Iterable[Mapping], key: str = "val_loss") -> LoggedRun:
        """From JSONL metric records: ``{"step", "lr"}`` per update (``step`` = updates done, 1-based)
        and ``key`` wherever logged. The training loss of update s was measured after s − 1 updates."""
        lrs: dict[int, float] = {}
        points: dict[int, float] = {}
        for record in records:
            if "lr" in record:
                lrs[int(record["step"])] = float(record["lr"])
            if key in record:
                points[int(record["step"]) - (key == "loss")] = float(record[key])
        if not lrs or not points:
            raise ValueError(f"metrics need 'lr' on every step and some {key!r} values; found "
                             f"{len(lrs)} lr and {len(points)} {key!r} records")
        steps = sorted(s for s in points if 0 < s <= len(lrs))
        return cls([lrs[s] for s in sorted(lrs)], steps, [points[s] for s in steps])


@dataclass(frozen=True)
class LossCurveFit:
    """Fitted constants of L(s) = L0 + A·S1^−α − C·S2, with momentum decay λ = ``decay``."""

    l0: float
    a: float
    alpha: float
    c: float
    decay: float = 0.999

    def predict(self, lrs: Sequence[float]) -> np.ndarray:
        """Predicted loss after each of the ``len(lrs)`` updates."""
        s1, s2 = annealing_areas(lrs, self.decay)
        return self.l0 + self.a * s1 ** -self.alpha - self.c * s2


def _huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.where(x.abs() <= delta, 0.5 * x**2, delta * (x.abs() - 0.5 * delta))


def fit_loss_curve(runs: Sequence[LoggedRun], decay: float = 0.999, delta: float = 1e-3) -> LossCurveFit:
    """Fit (L0, A, α, C) > 0 jointly on ``runs`` by L-BFGS on log-parameters, minimising
    Σ Huber_δ(log L_pred − log L_obs) (the reproductions' recipe) from a small grid of starts."""
    if not runs:
        raise ValueError("runs must hold at least one LoggedRun, got none")
    areas, observed = [], []
    for run in runs:
        s1, s2 = annealing_areas(run.lrs, decay)
        index = np.asarray(run.steps) - 1
        areas.append((torch.from_numpy(s1[index]), torch.from_numpy(s2[index])))
        observed.append(torch.log(torch.tensor(run.losses, dtype=torch.float64)))
    low = min(float(torch.exp(o).min()) for o in observed)
    s1_mean = float(torch.cat([s1 for s1, _ in areas]).mean())
    s2_mean = float(torch.cat([s2 for _, s2 in areas]).abs().mean()) or 1.0

    def objective(theta: torch.Tensor) -> torch.Tensor:
        l0, a, alpha, c = theta.exp()
        total = theta.new_zeros(())
        for (s1, s2), log_obs in zip(areas, observed, strict=True):
            predicted = (l0 + a * s1 ** -alpha - c * s2).clamp_min(1e-8)
            total = total + _huber(predicted.log() - log_obs, delta).sum()
        return total

    best, best_value = None, float("inf")
    for l0_share, alpha, c_share in itertools.product((0.5, 0.8), (0.3, 0.7), (0.01, 0.1)):
        l0 = l0_share * low
        start = [l0, (low - l0) * s1_mean**alpha, alpha, c_share * low / s2_mean]
        theta = torch.tensor(start, dtype=torch.float64).log().requires_grad_(True)
        optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure(theta=theta, optimizer=optimizer):
            optimizer.zero_grad()
            value = objective(theta)
            value.backward()
            return value

        optimizer.step(closure)
        with torch.no_grad():
            value = float(objective(theta))
        if np.isfinite(value) and value < best_value:
            best, best_value = theta.detach().exp().tolist(), value
    if best is None:
        raise ValueError("the loss-curve fit did not converge from any start; check the logged losses")
    return LossCurveFit(*best, decay=decay)
