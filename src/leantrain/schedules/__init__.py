"""Learning-rate schedules as ``LRScheduler`` subclasses, one multiplier for every param group.

``build(name, optimizer, total_steps=..., ...)`` picks one by name for recipes and the CLI;
``lr_curve`` lists the lr a schedule gives at each step, without a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from leantrain.names import SCHEDULE_OPTIONS, SCHEDULES
from leantrain.schedules.base import MultiplierSchedule, require
from leantrain.schedules.formulas import DECAY_SHAPES
from leantrain.schedules.linear_decay import LinearDecay
from leantrain.schedules.power import Power
from leantrain.schedules.refined import Refined
from leantrain.schedules.rex import REX
from leantrain.schedules.wsd import WSD

DEFAULT_DECAY_FRACTION = 0.2  # of total_steps, for "wsd" and "power" (Hägele et al. 2024: ~20% with 1-sqrt)
OPTIONS = SCHEDULE_OPTIONS  # what each schedule takes besides total/warmup steps and min_lr_ratio


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``name`` is a schedule that takes every one of ``options``."""
    require(name in OPTIONS, "schedule", name, f"one of {', '.join(SCHEDULES)}")
    for key in options:
        if key not in OPTIONS[name]:
            takes = ", ".join(OPTIONS[name]) or "no option"
            raise ValueError(f"schedule {name!r} does not take {key!r}; it takes {takes} (besides total_steps, "
                             "warmup_steps and min_lr_ratio)")


def options_for(name: str, context: Mapping[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
    """The options for ``build(name, ...)`` from the settings a user set (None: not set), which must
    all be ones that ``name`` takes (ValueError naming the first that is not), plus those facts
    about the run in ``context`` (e.g. ``batch_size``, ``tokens_per_step``) that ``name`` takes."""
    options = {key: value for key, value in settings.items() if value is not None}
    check_options(name, options)
    return {**{key: value for key, value in (context or {}).items() if key in OPTIONS[name]}, **options}


def build(name: str, optimizer: Optimizer, *, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0,
          **options) -> MultiplierSchedule:
    """The schedule ``name`` (one of ``SCHEDULES``) for a run of ``total_steps`` optimizer updates.

    - ``"constant"``: warmup then constant (WSD without decay);
    - ``"cosine"``: warmup then cosine to ``min_lr_ratio`` (WSD whose decay is the whole run);
    - ``"linear"``: :class:`LinearDecay`;  ``"rex"``: :class:`REX`;
    - ``"wsd"``: :class:`WSD`, options ``decay_steps`` (steps or fraction, default 0.2), ``decay``,
      ``half_life``;
    - ``"power"``: :class:`Power`, options ``batch_size``, ``tokens_per_step`` (required), ``a``, ``b``,
      ``decay``, ``max_lr`` and ``decay_steps`` (steps or fraction, default 0.2) ending at ``total_steps``;
    - ``"refined"``: :class:`Refined`, options ``grad_norms`` (``total_steps`` of them), ``smoothing``;
      it ends at 0, so ``min_lr_ratio`` must be 0.

    An option that ``name`` does not take raises ValueError naming it.
    """
    check_options(name, options)
    if name == "constant":
        return WSD(optimizer, warmup_steps, total_steps, 0, min_lr_ratio=min_lr_ratio, **options)
    if name == "cosine":
        return WSD(optimizer, warmup_steps, total_steps, total_steps - warmup_steps, "cosine", min_lr_ratio,
                   **options)
    if name == "linear":
        return LinearDecay(optimizer, warmup_steps, total_steps, min_lr_ratio, **options)
    if name == "rex":
        return REX(optimizer, warmup_steps, total_steps, min_lr_ratio, **options)
    if name == "wsd":
        decay_steps = options.pop("decay_steps", DEFAULT_DECAY_FRACTION)
        return WSD(optimizer, warmup_steps, total_steps, decay_steps, min_lr_ratio=min_lr_ratio, **options)
    if name == "power":
        decay_steps = options.pop("decay_steps", DEFAULT_DECAY_FRACTION)
        if isinstance(decay_steps, float):
            require(0.0 <= decay_steps <= 1.0, "decay_steps", decay_steps, "a step count or a fraction in [0, 1]")
            decay_steps = round(decay_steps * total_steps)
        require(0 <= decay_steps <= total_steps - warmup_steps, "decay_steps", decay_steps,
                f"between 0 and total_steps - warmup_steps = {total_steps - warmup_steps}")
        decay_start = total_steps - decay_steps if decay_steps else None
        return Power(optimizer, warmup_steps=warmup_steps, decay_start=decay_start, decay_steps=decay_steps,
                     min_lr_ratio=min_lr_ratio, **options)
    if name == "refined":
        require(min_lr_ratio == 0.0, "min_lr_ratio", min_lr_ratio, "0 for the refined schedule (it ends at 0)")
        grad_norms = options.pop("grad_norms")
        require(len(grad_norms) == total_steps, "grad_norms", f"{len(grad_norms)} values",
                f"one per step, total_steps = {total_steps}")
        return Refined(optimizer, grad_norms, warmup_steps, **options)
    raise AssertionError(f"schedule {name!r} is in OPTIONS but not built")


def lr_curve(name: str, total_steps: int, lr: float = 1.0, **kwargs) -> list[float]:
    """The lr of each of the ``total_steps`` updates under ``build(name, ...)`` with peak ``lr``."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = build(name, optimizer, total_steps=total_steps, **kwargs)
    lrs = []
    for _ in range(total_steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


__all__ = ["DECAY_SHAPES", "OPTIONS", "REX", "SCHEDULES", "WSD", "LinearDecay", "MultiplierSchedule", "Power",
           "Refined", "build", "check_options", "lr_curve", "options_for"]
