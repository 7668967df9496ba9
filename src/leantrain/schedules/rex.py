"""REX: "reflected exponential" decay (Chen, Wolfe & Kyrillidis, MLSys 2022)."""

from __future__ import annotations

from torch.optim import Optimizer

from leantrain.schedules import formulas
from leantrain.schedules.base import MultiplierSchedule
from leantrain.schedules.linear_decay import check_warmup_total


class REX(MultiplierSchedule):
    """Linear warmup, then z/(½ + ½z) with z = 1 − progress: stays high longer than linear decay,
    then drops steeply to ``min_lr_ratio`` at ``total_steps``."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
        check_warmup_total(warmup_steps, total_steps, min_lr_ratio)
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def multiplier(self, step: int) -> float:
        return formulas.rex(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)
