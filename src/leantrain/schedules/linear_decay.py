"""Linear decay to zero, the worst-case optimal last-iterate schedule (Defazio et al. 2023)."""

from __future__ import annotations

from torch.optim import Optimizer

from leantrain.schedules import formulas
from leantrain.schedules.base import MultiplierSchedule, require


def check_warmup_total(warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
    require(warmup_steps >= 0, "warmup_steps", warmup_steps, ">= 0")
    require(total_steps > warmup_steps, "total_steps", total_steps, f"> warmup_steps = {warmup_steps}")
    require(0.0 <= min_lr_ratio <= 1.0, "min_lr_ratio", min_lr_ratio, "in [0, 1]")


class LinearDecay(MultiplierSchedule):
    """Linear warmup over ``warmup_steps``, then linear decay to ``min_lr_ratio`` at ``total_steps``.
    With ``min_lr_ratio=0`` it equals HF ``get_linear_schedule_with_warmup``."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
        check_warmup_total(warmup_steps, total_steps, min_lr_ratio)
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def multiplier(self, step: int) -> float:
        return formulas.linear_decay(min(step, self.total_steps), self.warmup_steps, self.total_steps,
                                     self.min_lr_ratio)
