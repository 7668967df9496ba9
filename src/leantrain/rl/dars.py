"""DARS's rollout budget: how many rollouts a prompt gets after a first round (Yang et al. 2025,
"Depth-Breadth Synergy in RLVR", arXiv 2508.13755).

With binary rewards, accuracy ``a`` and ``N`` rollouts, the summed absolute GRPO advantage of a
group is ``N·S(a)`` with ``S(a) = 2a(1 − a)`` for mean-centred advantages (``2√(a(1 − a))`` with
std-normalised ones); it peaks at ``a = ½`` with ``A* = N/2`` (``A* = N``). DARS gives each prompt
below 50 % accuracy extra rollouts ``Δn = ⌈(target − N·S(a)) / S(a)⌉`` so its summed advantage
reaches a target:

- Equal Treatment (``"et"``): target ``A*`` for every hard prompt;
- Hardness Weighted (``"hw"``): target ``2(1 − a)·A*``, growing as the prompt gets harder.

An unsolved prompt (``a = 0``) is scored as ``a = 0.5/N``; ``Δn`` is capped at ``N_max − N``.
This follows the released code line by line (``schedule_ET`` / ``schedule_HW`` in
``verl/verl/trainer/ppo/ray_dars_trainer.py`` at commit 9b21b71, whose released runs use the
mean-centred ``std=False`` form); the paper's own equations were not available to us. The older
commit 0c182e5 used hard-coded tables that differ (e.g. 18 rollouts in all at ``a = 1/8``, N = 8,
where ET gives 19).
"""

from __future__ import annotations

import math

from leantrain.names import DARS_RULES as RULES
from leantrain.validation import is_positive_int

UNSOLVED = 1e-6  # an accuracy at or below this counts as unsolved (the released code's threshold)


def dars_budget(accuracy: float, n: int, rule: str = "et", n_max: int | None = None, std: bool = False) -> int:
    """Total rollouts ``n + Δn`` for a prompt with first-round ``accuracy`` over ``n`` rollouts.

    ``rule``: ``"et"`` (Equal Treatment) or ``"hw"`` (Hardness Weighted), DARS's ``schedule_ET`` /
    ``schedule_HW``. ``n_max``: the most rollouts a prompt may get in all (``None``: uncapped).
    ``std``: the std-normalised cumulative advantage (the released runs use ``False``).
    Prompts at accuracy >= 0.5 get no extra rollouts.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not is_positive_int(n):
        raise ValueError(f"n (first-round rollouts) must be an int >= 1, got {n!r}")
    if n_max is not None and (isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < n):
        raise ValueError(f"n_max must be None (uncapped) or an int >= n={n}, got {n_max!r}")
    a = float(accuracy)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy!r}")
    if not isinstance(std, bool):
        raise ValueError(f"std must be True or False, got {std!r}")

    if a <= UNSOLVED:
        a = 0.5 / n
    if a >= 0.5:
        return n
    if std:
        spread, peak = 2.0 * math.sqrt(a * (1.0 - a)), float(n)
    else:
        spread, peak = 2.0 * a * (1.0 - a), 0.5 * n
    target = peak if rule == "et" else 2.0 * (1.0 - a) * peak
    extra = math.ceil((target - n * spread) / spread)
    if n_max is not None:
        extra = min(extra, n_max - n)
    return n + extra
