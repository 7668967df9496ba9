"""Learning-rate multipliers as pure functions of the step (or tokens seen): no state, no torch.

Every function returns the factor applied to a param group's initial (peak) learning rate. Warmups
follow the HF convention ``step / warmup_steps`` (0 at step 0). Decay shapes map progress
``p ∈ [0, 1]`` to a factor falling from 1 to 0; a floor ``min_lr_ratio`` is applied affinely,
``r + (1 − r)·f(p)``, as in HF ``get_wsd_schedule``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "exp", "half-life")


def decay_factor(progress: float, shape: str, half_lives: float = 5.0) -> float:
    """f(p) for p = fraction of the decay phase done, clamped to [0, 1].

    - ``"linear"``: 1 − p;  ``"cosine"``: ½(1 + cos πp);  ``"1-sqrt"``: 1 − √p (Hägele et al. 2024).
    - ``"exp"``: exponential decay reaching exactly 0 at p = 1, (e^{1−p} − 1)/(e − 1); with the affine
      floor this is the IBM/dolomite-engine form A·e^{−p} + B used for the Power scheduler's decay
      (Shen et al. 2024 §5).
    - ``"half-life"``: MiniCPM's 0.5^{(s − s_decay)/T_half} (Hu et al. 2024 §6.2) with ``half_lives``
      = decay length / T_half; it never reaches 0.
    """
    p = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        return 1.0 - p
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(p)
    if shape == "exp":
        return (math.exp(1.0 - p) - 1.0) / (math.e - 1.0)
    if shape == "half-life":
        return 0.5 ** (p * half_lives)
    raise ValueError(f"decay must be one of {', '.join(DECAY_SHAPES)}, got {shape!r}")


def with_floor(factor: float, min_lr_ratio: float) -> float:
    """Map a factor in [0, 1] to [min_lr_ratio, 1]."""
    return min_lr_ratio + (1.0 - min_lr_ratio) * factor


def wsd(step: int, warmup_steps: int, total_steps: int, decay_steps: int, decay: str = "1-sqrt",
        min_lr_ratio: float = 0.0, half_lives: float = 5.0) -> float:
    """Warmup–stable–decay (MiniCPM, Hu et al. 2024 Eq. 1): linear warmup, 1 until
    ``total_steps − decay_steps``, then ``decay`` to the floor, held after ``total_steps``.
    Warmup starts at the floor, as in HF ``get_wsd_schedule``."""
    if step < warmup_steps:
        return with_floor(step / warmup_steps, min_lr_ratio)
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = (step - decay_start) / decay_steps if decay_steps else 1.0
    return with_floor(decay_factor(progress, decay, half_lives), min_lr_ratio)


def linear_decay(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup, then linear decay to the floor at ``total_steps`` — the worst-case optimal
    last-iterate schedule (Defazio et al. 2023); equals HF ``get_linear_schedule_with_warmup``."""
    if step < warmup_steps:
        return step / warmup_steps
    return with_floor(decay_factor((step - warmup_steps) / (total_steps - warmup_steps), "linear"), min_lr_ratio)


def rex(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """REX (Chen et al. 2022): z / (½ + ½z) with z = 1 − p, after a linear warmup."""
    if step < warmup_steps:
        return step / warmup_steps
    z = 1.0 - min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return with_floor(z / (0.5 + 0.5 * z), min_lr_ratio)


def power_lr(tokens: float, batch_size: int, a: float, b: float, max_lr: float) -> float:
    """η_power(n) = min(η_max, β·a·n^b) (Shen et al. 2024 Eq. 7), n tokens seen, β the batch size
    in sequences. At n = 0 it is the limit n → 0⁺, i.e. η_max (b < 0)."""
    if tokens <= 0:
        return max_lr
    return min(max_lr, batch_size * a * tokens**b)


def power(step: int, tokens_per_step: int, batch_size: int, a: float, b: float, max_lr: float,
          warmup_steps: int = 0, decay_start: int | None = None, decay_steps: int = 0, decay: str = "exp",
          min_lr_ratio: float = 0.0) -> float:
    """The Power scheduler (Shen et al. 2024 Eq. 8) as a multiplier of ``max_lr``: a linear ramp to
    η_power(N_warmup), then η_power(n), then from ``decay_start`` a ``decay`` of η_power(N_decay_start)
    over ``decay_steps`` to ``min_lr_ratio`` of it, held afterwards."""
    def eta(s: int) -> float:
        return power_lr(s * tokens_per_step, batch_size, a, b, max_lr) / max_lr

    if decay_start is not None and step >= decay_start:
        progress = (step - decay_start) / decay_steps if decay_steps else 1.0
        return eta(decay_start) * with_floor(decay_factor(progress, decay), min_lr_ratio)
    if step < warmup_steps:
        return step / warmup_steps * eta(warmup_steps)
    return eta(step)


def median_filter(values: Sequence[float], width: int) -> np.ndarray:
    """Running median over an odd ``width``; edges repeat the first/last value (scipy's "nearest")."""
    half = width // 2
    padded = np.pad(np.asarray(values, dtype=np.float64), half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=-1)


def refined(grad_norms: Sequence[float], smoothing: float = 0.05) -> list[float]:
    """Refinement from a previous run's gradient norms (Defazio et al. 2023, official
    ``find_closed_form_schedule``): median-smooth the norms over a window of ``smoothing`` of the
    run (end padded by reflection), weights w_t = Ĝ_t⁻², schedule η_t ∝ w_t·Σ_{p>t} w_p, scaled to
    peak 1. One value per logged norm; the last is 0. Constant norms give linear decay to 0."""
    n = len(grad_norms)
    width = 2 * int(smoothing * n / 2) + 1
    padded = np.pad(np.asarray(grad_norms, dtype=np.float64), (0, 2 * width), mode="reflect")
    weights = median_filter(padded, width)[:n] ** -2.0
    tail_after = np.cumsum(weights[::-1])[::-1] - weights
    schedule = weights * tail_after
    return (schedule / schedule.max()).tolist()
