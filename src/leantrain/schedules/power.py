"""The Power scheduler: a learning rate set by tokens seen, no total budget (Shen et al. 2024)."""

from __future__ import annotations

from torch.optim import Optimizer

from leantrain.schedules import formulas
from leantrain.schedules.base import MultiplierSchedule, require


class Power(MultiplierSchedule):
    """η(n) = min(η_max, β·a·n^b) with n = tokens seen and β = ``batch_size`` in sequences
    (Shen et al. 2024 Eq. 7–8). ``tokens_per_step`` (tokens per optimizer update) is given once;
    n = step × tokens_per_step.

    η_max is ``max_lr`` (default: the first param group's lr); the multiplier η(n)/η_max is applied
    to every group, so μP groups at η/m_width keep their ratio. Warmup is a linear ramp to
    η_power(N_warmup). An optional decay (``decay`` shape, default the paper's exponential to 0)
    runs for ``decay_steps`` from ``decay_start``, down to ``min_lr_ratio`` of the lr there; or start
    it at the current step with :meth:`start_decay`, also after resuming a checkpoint.
    The paper's defaults: a = 4, b = −0.51, η_max = 0.02, all with μP.
    """

    def __init__(self, optimizer: Optimizer, batch_size: int, tokens_per_step: int, a: float = 4.0,
                 b: float = -0.51, warmup_steps: int = 0, decay_start: int | None = None, decay_steps: int = 0,
                 decay: str = "exp", min_lr_ratio: float = 0.0, max_lr: float | None = None,
                 last_epoch: int = -1) -> None:
        group = optimizer.param_groups[0]
        max_lr = group.get("initial_lr", group["lr"]) if max_lr is None else max_lr
        require(batch_size > 0, "batch_size", batch_size, "> 0 sequences per optimizer update")
        require(tokens_per_step > 0, "tokens_per_step", tokens_per_step, "> 0")
        require(a > 0, "a", a, "> 0")
        require(b < 0, "b", b, "< 0 (the lr must fall with tokens seen)")
        require(max_lr > 0, "max_lr", max_lr, "> 0 (η_max; defaults to the optimizer's lr)")
        require(warmup_steps >= 0, "warmup_steps", warmup_steps, ">= 0")
        require(decay_start is None or decay_start >= warmup_steps, "decay_start", decay_start,
                f"None or >= warmup_steps = {warmup_steps}")
        require(decay_steps >= 0, "decay_steps", decay_steps, ">= 0")
        require(decay in formulas.DECAY_SHAPES, "decay", decay, f"one of {formulas.DECAY_SHAPES}")
        require(0.0 <= min_lr_ratio <= 1.0, "min_lr_ratio", min_lr_ratio, "in [0, 1]")
        self.batch_size, self.tokens_per_step, self.a, self.b, self.max_lr = batch_size, tokens_per_step, a, b, max_lr
        self.warmup_steps, self.decay_start, self.decay_steps = warmup_steps, decay_start, decay_steps
        self.decay, self.min_lr_ratio = decay, min_lr_ratio
        super().__init__(optimizer, last_epoch)

    @property
    def tokens_seen(self) -> int:
        return self.last_epoch * self.tokens_per_step

    def start_decay(self, decay_steps: int, decay: str | None = None) -> None:
        """Begin the decay phase now (or at the end of warmup if called earlier), lasting ``decay_steps``
        updates; works after ``load_state_dict`` too."""
        require(decay_steps >= 0, "decay_steps", decay_steps, ">= 0")
        require(decay is None or decay in formulas.DECAY_SHAPES, "decay", decay, f"one of {formulas.DECAY_SHAPES}")
        self.decay_start, self.decay_steps = max(self.last_epoch, self.warmup_steps), decay_steps
        self.decay = decay or self.decay

    def multiplier(self, step: int) -> float:
        return formulas.power(step, self.tokens_per_step, self.batch_size, self.a, self.b, self.max_lr,
                              self.warmup_steps, self.decay_start, self.decay_steps, self.decay,
                              self.min_lr_ratio)
