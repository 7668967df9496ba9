"""Warmup–stable–decay (MiniCPM, Hu et al. 2024 Eq. 1)."""

from __future__ import annotations

from torch.optim import Optimizer

from leantrain.schedules import formulas
from leantrain.schedules.base import MultiplierSchedule, require


class WSD(MultiplierSchedule):
    """Linear warmup over ``warmup_steps``, constant, then ``decay`` over the last ``decay_steps``
    of ``total_steps`` down to ``min_lr_ratio`` (held afterwards).

    ``decay_steps`` is a step count (int) or a fraction of ``total_steps`` (float in (0, 1]);
    MiniCPM found ~10% enough, Hägele et al. ~20% with ``"1-sqrt"``. ``decay`` is one of
    ``formulas.DECAY_SHAPES``; for ``"half-life"`` the lr halves every ``half_life`` steps
    (default ``decay_steps / 5``; MiniCPM used 5000). For linear/cosine/1-sqrt shapes this equals HF
    ``get_wsd_schedule(warmup_type="linear")`` at every step.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, decay_steps: int | float,
                 decay: str = "1-sqrt", min_lr_ratio: float = 0.0, half_life: float | None = None,
                 last_epoch: int = -1) -> None:
        if isinstance(decay_steps, float):
            require(0.0 < decay_steps <= 1.0, "decay_steps", decay_steps,
                    "a step count (int) or a fraction of total_steps in (0, 1] (float)")
            decay_steps = round(decay_steps * total_steps)
        require(warmup_steps >= 0, "warmup_steps", warmup_steps, ">= 0")
        require(total_steps > 0, "total_steps", total_steps, "> 0")
        require(0 <= decay_steps <= total_steps - warmup_steps, "decay_steps", decay_steps,
                f"between 0 and total_steps - warmup_steps = {total_steps - warmup_steps}")
        require(decay in formulas.DECAY_SHAPES, "decay", decay, f"one of {formulas.DECAY_SHAPES}")
        require(0.0 <= min_lr_ratio <= 1.0, "min_lr_ratio", min_lr_ratio, "in [0, 1]")
        require(half_life is None or half_life > 0, "half_life", half_life, "> 0 steps or None")
        self.warmup_steps, self.total_steps, self.decay_steps = warmup_steps, total_steps, decay_steps
        self.decay, self.min_lr_ratio = decay, min_lr_ratio
        self.half_lives = 5.0 if half_life is None else decay_steps / half_life
        super().__init__(optimizer, last_epoch)

    def multiplier(self, step: int) -> float:
        return formulas.wsd(step, self.warmup_steps, self.total_steps, self.decay_steps, self.decay,
                            self.min_lr_ratio, self.half_lives)
