"""GRPO group-relative advantages for groups of any sizes (DeepSeekMath, Shao et al. 2024, §4.1.2).

Every completion of one prompt shares a group label. Its advantage is its reward minus the mean
reward of its group, divided by a standard deviation: ``Â_i = (r_i − mean_g) / (std + eps)``,
the outcome-supervision advantage of DeepSeekMath §4.1.2, with TRL's ``eps = 1e-4`` and TRL's
Bessel-corrected (n − 1) std. ``scale`` picks the std as TRL's ``scale_rewards`` does:

- ``"group"``: the std of the prompt's own group (DeepSeekMath);
- ``"batch"``: one std over every scored reward of the batch, the mean staying per group (TRL's
  ``scale_rewards="batch"``);
- ``"none"``: no division (Dr. GRPO, Liu et al. 2025, "Understanding R1-Zero-Like Training").

Unlike TRL, groups need not be of equal size or contiguous: DARS's second round gives hard
prompts more rollouts (Yang et al. 2025), and its released code also computes advantages by
group label (verl ``compute_grpo_outcome_advantage(..., index=uid)``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from leantrain.names import ADVANTAGE_SCALES as SCALES


@dataclass(frozen=True)
class GroupAdvantages:
    """Advantages of one batch, and what they say about the groups.

    ``values``: one advantage per sample, in the order of the rewards, in their dtype and device.
    ``groups``: distinct group labels. ``zero_std_groups``: groups with no learning signal (every
    scored reward equal, a single scored reward, or none); all their members get advantage 0.
    ``unscored``: samples whose reward was NaN (or None); they get advantage 0.
    """

    values: torch.Tensor
    groups: int
    zero_std_groups: int
    unscored: int


def _rewards(rewards: torch.Tensor | Sequence[float | None]) -> torch.Tensor:
    if isinstance(rewards, torch.Tensor):
        values = rewards if rewards.is_floating_point() else rewards.to(torch.get_default_dtype())
    else:
        values = torch.tensor([math.nan if r is None else float(r) for r in rewards])
    if values.dim() != 1:
        raise ValueError(f"rewards must be 1-d (one reward per sample), got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError("rewards must not be empty")
    if torch.isinf(values).any():
        raise ValueError(f"rewards must be finite or NaN (unscored), got {values[torch.isinf(values)][0].item()}")
    return values


def _group_index(group_ids: torch.Tensor | Sequence[Hashable], size: int, device: torch.device) -> torch.Tensor:
    """Each sample's group as 0, 1, 2, … in order of first appearance."""
    labels = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    if len(labels) != size:
        raise ValueError(f"group_ids must give one label per reward: got {len(labels)} labels for {size} rewards")
    codes: dict[Hashable, int] = {}
    try:
        index = [codes.setdefault(label, len(codes)) for label in labels]
    except TypeError as error:
        raise ValueError(f"group_ids must be hashable labels (ints, strings, …): {error}") from None
    return torch.tensor(index, dtype=torch.long, device=device)


def group_advantages(rewards: torch.Tensor | Sequence[float | None], group_ids: torch.Tensor | Sequence[Hashable],
                     scale: str = "group", eps: float = 1e-4) -> GroupAdvantages:
    """GRPO advantages ``(r − mean_group) / (std + eps)`` over ragged groups (DeepSeekMath §4.1.2; TRL).

    ``rewards``: one per sample; NaN or None marks an unscored sample (its reward function failed or
    returned None), which is left out of its group's mean and std and gets advantage 0, as in TRL.
    ``group_ids``: one hashable label per sample (e.g. a prompt index or uid); labels need not be
    contiguous. ``scale``: ``"group"``, ``"batch"`` or ``"none"`` (see the module docstring).
    A group whose scored rewards are all equal (or that has fewer than two) gets advantage 0 and
    is counted in ``zero_std_groups``. The arithmetic runs in float64.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    values = _rewards(rewards)
    index = _group_index(group_ids, values.numel(), values.device)
    groups = int(index.max()) + 1

    r = values.double()
    scored = ~torch.isnan(r)
    r0 = torch.where(scored, r, 0.0)
    zeros = torch.zeros(groups, dtype=torch.float64, device=r.device)
    count = zeros.index_add(0, index, scored.double())
    mean = zeros.index_add(0, index, r0) / count.clamp(min=1)
    centred = torch.where(scored, r - mean[index], 0.0)

    # A group has signal only if two of its scored rewards differ.
    highest = torch.full_like(zeros, -math.inf).scatter_reduce(0, index[scored], r[scored], "amax")
    lowest = torch.full_like(zeros, math.inf).scatter_reduce(0, index[scored], r[scored], "amin")
    has_signal = highest > lowest

    if scale == "group":
        variance = zeros.index_add(0, index, centred**2) / (count - 1).clamp(min=1)
        advantages = centred / (variance.sqrt()[index] + eps)
    elif scale == "batch":
        batch_std = r[scored].std() if int(scored.sum()) > 1 else r.new_zeros(())
        advantages = centred / (batch_std + eps)
    else:
        advantages = centred
    advantages = torch.where(scored & has_signal[index], advantages, 0.0)
    return GroupAdvantages(values=advantages.to(values.dtype), groups=groups,
                           zero_std_groups=int((~has_signal).sum()), unscored=int((~scored).sum()))
