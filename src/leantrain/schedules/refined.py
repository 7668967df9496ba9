"""A schedule refined from a previous run's gradient norms (Defazio et al. 2023)."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer

from leantrain.schedules import formulas
from leantrain.schedules.base import MultiplierSchedule, require


class Refined(MultiplierSchedule):
    """η_t ∝ w_t·Σ_{p>t} w_p with w = median-smoothed ‖g‖⁻² from ``grad_norms``, one norm per
    optimizer update of an earlier run (typically a linear-decay run of the same length).

    The run lasts ``len(grad_norms)`` updates. After an optional linear ``warmup_steps`` ramp, the
    refinement covers the remaining steps (from their norms) and ends at 0 on the last update, so on
    constant norms it equals ``LinearDecay(warmup_steps, total_steps=len(grad_norms) - 1)``.
    ``smoothing`` is the median-filter window as a fraction of the run (our default; the paper's
    README leaves it open).
    """

    def __init__(self, optimizer: Optimizer, grad_norms: Sequence[float], warmup_steps: int = 0,
                 smoothing: float = 0.05, last_epoch: int = -1) -> None:
        require(warmup_steps >= 0, "warmup_steps", warmup_steps, ">= 0")
        require(len(grad_norms) - warmup_steps >= 2, "grad_norms", f"{len(grad_norms)} values",
                f"at least warmup_steps + 2 = {warmup_steps + 2} values")
        require(all(g > 0 for g in grad_norms), "grad_norms", min(grad_norms), "all > 0")
        require(0.0 <= smoothing < 1.0, "smoothing", smoothing, "in [0, 1)")
        self.warmup_steps, self.smoothing = warmup_steps, smoothing
        self.schedule = formulas.refined([float(g) for g in grad_norms[warmup_steps:]], smoothing)
        super().__init__(optimizer, last_epoch)

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + len(self.schedule)

    def multiplier(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps * self.schedule[0]
        return self.schedule[min(step - self.warmup_steps, len(self.schedule) - 1)]
