"""One multiplier for every param group: the base of all leantrain schedules."""

from __future__ import annotations

from torch.optim.lr_scheduler import LRScheduler


def require(ok: bool, field: str, value: object, allowed: str) -> None:
    """Raise ``ValueError`` naming the field, its value and what is allowed, unless ``ok``."""
    if not ok:
        raise ValueError(f"{field} must be {allowed}, got {value!r}")


class MultiplierSchedule(LRScheduler):
    """Sets every group's lr to ``initial_lr × multiplier(step)``, ``step`` = optimizer updates done.

    One multiplier for all groups keeps per-group ratios (μP's η/m_width) intact. Subclasses
    implement :meth:`multiplier` from plain attributes, so ``state_dict()`` / ``load_state_dict()``
    round-trip the whole schedule mid-run. Call ``scheduler.step()`` after each ``optimizer.step()``
    (once per update, not per micro-batch under gradient accumulation).
    """

    def multiplier(self, step: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        factor = self.multiplier(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]
