"""Sampler-trainer mismatch: rollouts drawn with other weights than the ones trained (a bf16 copy, vLLM).

With ``d_t = log π_train(y_t) − log π_sample(y_t)`` on a completion's tokens (π_train: the trained weights'
log-probs, recomputed; π_sample: what the sampler drew with):

- the mismatch reported per step is the token mean of ``|d_t|`` and of ``k3 = (e^{d_t} − 1) − d_t``, an
  unbiased, non-negative estimate of KL(π_sample ‖ π_train) from the sampler's tokens (Schulman's k3);
- truncated importance sampling (TIS, Yao et al. 2025, "Your efficient RL framework secretly brings you
  off-policy RL training"; TRL's ``vllm_importance_sampling_correction``, verl's ``rollout_is``) weighs
  each token's policy loss by ``ρ``, per token ``ρ_t = min(e^{d_t}, cap)`` or per sequence
  ``ρ = min(e^{Σ_t d_t}, cap)`` (TRL sums, not averages, the sequence's differences; its cap is 3).
  The weights carry no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leantrain.names import TIS_LEVELS

TIS_CAP = 3.0  # TRL's vllm_importance_sampling_clip_max


def mismatch(train_logprobs: Tensor, sample_logprobs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(Σ |d|, Σ k3, active tokens) over the masked tokens, detached: sums, so that micro-batches add up."""
    mask = mask.to(torch.float32)
    d = (train_logprobs.detach().float() - sample_logprobs.float()) * mask
    k3 = (torch.expm1(d) - d) * mask
    return d.abs().sum(), k3.sum(), mask.sum()


def truncated_importance_weights(train_logprobs: Tensor, sample_logprobs: Tensor, mask: Tensor, level: str = "token",
                                 cap: float = TIS_CAP) -> Tensor:
    """The TIS weights ρ (B, T), detached, 0 off the mask (see the module docstring)."""
    if level not in TIS_LEVELS:
        raise ValueError(f"level={level!r} is not one of {', '.join(TIS_LEVELS)}")
    if not cap >= 1:
        raise ValueError(f"cap={cap!r} must be >= 1 (a cap below 1 would shrink on-policy tokens too)")
    mask = mask.to(torch.float32)
    d = (train_logprobs.detach().float() - sample_logprobs.float()) * mask
    log_ratio = d if level == "token" else d.sum(-1, keepdim=True).expand_as(d)
    return torch.exp(log_ratio).clamp(max=cap) * mask
