"""EngineConfig: how the one training loop runs — updates, accumulation, precision, process layout."""

from __future__ import annotations

import math
from dataclasses import dataclass

from leantrain.names import LAYOUTS, PRECISIONS
from leantrain.validation import is_positive_int


@dataclass(frozen=True)
class EngineConfig:
    """``max_steps`` optimizer updates, each over ``grad_accum`` micro-batches per process.

    ``precision``: "fp32", or "bf16" autocast (weights and optimizer states stay fp32). ``layout``:
    how several processes hold the model — "ddp" (a replica each, gradients averaged) or "fsdp2"
    (``fully_shard``: parameters, gradients and optimizer states sharded); one process ignores it.
    ``eval_every`` / ``save_every``: updates between evaluations / checkpoints (None: only at the end);
    ``eval_at_start``: evaluate the starting model too, as the record of step 0 (not again on resume).
    ``grad_clip``: max global gradient norm (None: no clipping; the norm is still logged).
    ``step_in_backward``: update each parameter and free its gradient as soon as backward has it
    (``leantrain.optim.in_backward.StepInBackward``, LOMO's fused update): the gradient buffer shrinks
    to one parameter's. It refuses ``grad_clip`` (the global norm comes after the first update),
    ``grad_accum`` > 1 (every micro-batch would update) and several processes (the update would come
    before the gradients are averaged).
    """

    max_steps: int
    grad_accum: int = 1
    grad_clip: float | None = None
    precision: str = "fp32"
    layout: str = "ddp"
    eval_every: int | None = None
    save_every: int | None = None
    eval_at_start: bool = False
    seed: int = 0
    show_progress: bool = True
    description: str = "train"
    step_in_backward: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum"):
            if not is_positive_int(getattr(self, name)):
                raise ValueError(f"EngineConfig.{name}={getattr(self, name)!r} must be an integer >= 1")
        for name in ("eval_every", "save_every"):
            value = getattr(self, name)
            if value is not None and not is_positive_int(value):
                raise ValueError(f"EngineConfig.{name}={value!r} must be None or an integer >= 1")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, int | float) and math.isfinite(self.grad_clip)
                                               and self.grad_clip > 0):
            raise ValueError(f"EngineConfig.grad_clip={self.grad_clip!r} must be None or a finite number > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"EngineConfig.precision={self.precision!r} is not one of {PRECISIONS} "
                             "(fp16 needs loss scaling; use bf16)")
        if self.layout not in LAYOUTS:
            raise ValueError(f"EngineConfig.layout={self.layout!r} is not one of {LAYOUTS}")
        if not isinstance(self.step_in_backward, bool):
            raise ValueError(f"EngineConfig.step_in_backward={self.step_in_backward!r} must be True or False")
        if self.step_in_backward and self.grad_clip is not None:
            raise ValueError(f"EngineConfig.grad_clip={self.grad_clip!r} cannot go with step_in_backward=True: "
                             "global-norm clipping needs every gradient before the first update, and the "
                             "fused step updates each parameter as soon as its gradient exists; use grad_clip=None")
        if self.step_in_backward and self.grad_accum > 1:
            raise ValueError(f"EngineConfig.grad_accum={self.grad_accum} cannot go with step_in_backward=True: "
                             "every micro-batch's backward would be an update; use grad_accum=1")
