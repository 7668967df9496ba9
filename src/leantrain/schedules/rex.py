"""REX: "reflected exponential" decay (Chen, Wolfe & Kyrillidis, MLSys 2022)."""

from __future__ import annotations

from leantrain.schedules import formulas
from leantrain.schedules.linear_decay import LinearDecay


class REX(LinearDecay):
    """Linear warmup, then z/(½ + ½z) with z = 1 − progress: stays high longer than linear decay,
    then drops steeply to ``min_lr_ratio`` at ``total_steps``. Same arguments as LinearDecay."""

    def multiplier(self, step: int) -> float:
        return formulas.rex(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)
