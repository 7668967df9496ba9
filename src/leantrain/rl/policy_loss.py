"""The GRPO policy loss: PPO's clipped surrogate per token, an optional k3 KL to a reference, and
TRL's four ways of averaging the tokens (``loss_type``), as ``GRPOTrainer._compute_loss`` (trl 1.16.0).

Per token, with ``ρ = exp(ℓ_θ − ℓ_old)`` (ℓ a token log-prob) and the sample's advantage ``Â``:

    loss_t = −min(ρ·Â, clip(ρ, 1 − ε_low, 1 + ε_high)·Â) + β·(exp(ℓ_ref − ℓ_θ) − (ℓ_ref − ℓ_θ) − 1)

the clipped surrogate of PPO (Schulman et al. 2017, Eq. 7) inside GRPO's objective (DeepSeekMath,
Shao et al. 2024, Eq. 3), with DAPO's decoupled ``ε_high`` ("Clip-Higher", Yu et al. 2025) and the
k3 KL estimator of DeepSeekMath Eq. 4. As in TRL 1.16.0 by default (``use_bias_correction_kl``), the
KL term is multiplied by ``ρ`` so that its gradient is the unbiased reverse-KL gradient off-policy
(DeepSeek-V3.2, arXiv 2512.02556); ``kl_bias_correction=False`` gives DeepSeekMath's plain k3 term.
Tokens are then averaged over the active (masked-in) ones:

- ``"grpo"``: per-sequence token mean, then the mean over sequences (DeepSeekMath Eq. 3); ÷ accumulation;
- ``"bnpo"``: token mean over the micro-batch; ÷ accumulation;
- ``"dr_grpo"``: token sum ÷ (sequences × ``max_completion_length``) (Dr. GRPO, Liu et al. 2025); ÷ accumulation;
- ``"dapo"``: token sum ÷ (``num_items_in_batch`` / ``num_processes``): a true token mean over every
  micro-batch and process of one optimizer step (DAPO's "Token-Level Policy Gradient Loss"; TRL's default).

Here "÷ accumulation" divides by ``gradient_accumulation_steps`` as TRL does, so that summing the
micro-batch losses of one optimizer step gives their mean; "dapo" needs no such division because
``num_items_in_batch`` already counts the tokens of the whole accumulation window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from leantrain.names import POLICY_LOSS_TYPES as LOSS_TYPES
from leantrain.validation import is_positive_int


@dataclass(frozen=True)
class PolicyLoss:
    """The loss to backpropagate and, detached, TRL's logged diagnostics over the active tokens.

    ``clip_low``: fraction of tokens with ``ρ < 1 − ε_low`` and ``Â < 0`` (TRL ``clip_ratio/low_mean``);
    ``clip_high``: ``ρ > 1 + ε_high`` and ``Â > 0`` (``clip_ratio/high_mean``); ``clip_region``: either
    (``clip_ratio/region_mean``); ``kl``: mean KL term as added to the loss, k3 (× ρ with the bias
    correction), TRL's ``kl`` (``None`` when ``beta == 0``).
    These are this process's token means; average them over processes by token count if needed.
    """

    loss: torch.Tensor
    clip_low: torch.Tensor
    clip_high: torch.Tensor
    clip_region: torch.Tensor
    kl: torch.Tensor | None


def _check_shape(name: str, tensor: torch.Tensor, shape: torch.Size) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {tuple(shape)}, got {type(tensor).__name__}")
    if tensor.shape != shape:
        raise ValueError(f"{name} must have the shape of logprobs {tuple(shape)}, got {tuple(tensor.shape)}")


def _check_settings(loss_type: str, epsilon_low: float, epsilon_high: float, beta: float,
                    ref_logprobs: torch.Tensor | None, kl_bias_correction: bool | None,
                    max_completion_length: int | None,
                    num_items_in_batch: int | float | torch.Tensor | None, num_processes: int,
                    gradient_accumulation_steps: int, longest: int) -> None:
    """Every setting in range, and none given that ``loss_type`` does not take."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    if not 0.0 <= epsilon_low <= 1.0:
        raise ValueError(f"epsilon_low must be in [0, 1] (the ratio is clipped below at 1 − epsilon_low), "
                         f"got {epsilon_low!r}")
    if not epsilon_high >= 0.0:
        raise ValueError(f"epsilon_high must be >= 0, got {epsilon_high!r}")
    if not beta >= 0.0:
        raise ValueError(f"beta (KL coefficient) must be >= 0, got {beta!r}")
    if beta > 0.0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} needs ref_logprobs, the reference model's token log-probs")
    if beta == 0.0 and ref_logprobs is not None:
        raise ValueError("ref_logprobs is only used with beta > 0; got ref_logprobs with beta=0.0")
    if kl_bias_correction is not None and (beta == 0.0 or not isinstance(kl_bias_correction, bool)):
        raise ValueError(f"kl_bias_correction must be None, True or False and is only used with beta > 0; "
                         f"got {kl_bias_correction!r} with beta={beta}")
    for name, value in (("num_processes", num_processes), ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if not is_positive_int(value):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' needs max_completion_length (its constant normaliser)")
        if isinstance(max_completion_length, bool) or not isinstance(max_completion_length, int) \
                or max_completion_length < longest:
            raise ValueError(f"max_completion_length must be an int >= the longest completion ({longest} active "
                             f"tokens in a row of mask), got {max_completion_length!r}")
    elif max_completion_length is not None:
        raise ValueError(f"max_completion_length is only used by loss_type='dr_grpo', got it with {loss_type!r}")
    if loss_type == "dapo":
        if isinstance(num_items_in_batch, (bool, str)) or (
                isinstance(num_items_in_batch, (int, float)) and not 0 <= num_items_in_batch < float("inf")):
            raise ValueError(f"num_items_in_batch must be a token count >= 0 (int or tensor), "
                             f"got {num_items_in_batch!r}")
        if num_items_in_batch is None and (num_processes > 1 or gradient_accumulation_steps > 1):
            raise ValueError("loss_type='dapo' over several micro-batches or processes needs num_items_in_batch, "
                             "the active tokens of the whole optimizer step summed over processes")
    else:
        if num_items_in_batch is not None:
            raise ValueError(f"num_items_in_batch is only used by loss_type='dapo', got it with {loss_type!r}")
        if num_processes != 1:
            raise ValueError(f"num_processes is only used by loss_type='dapo', got {num_processes} with {loss_type!r}")


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor | None, advantages: torch.Tensor,
                mask: torch.Tensor, *, epsilon_low: float = 0.2, epsilon_high: float | None = None,
                beta: float = 0.0, ref_logprobs: torch.Tensor | None = None,
                kl_bias_correction: bool | None = None, loss_type: str = "dapo",
                max_completion_length: int | None = None,
                num_items_in_batch: int | float | torch.Tensor | None = None, num_processes: int = 1,
                gradient_accumulation_steps: int = 1, importance_weights: torch.Tensor | None = None) -> PolicyLoss:
    """Clipped-surrogate GRPO loss of one micro-batch (PPO Eq. 7 in DeepSeekMath Eq. 3; TRL semantics).

    ``logprobs``: (B, T) log-probs of the completion tokens under the policy being trained (with
    gradient). ``old_logprobs``: the same under the policy that sampled them; ``None`` means on-policy
    (``ρ = exp(ℓ − ℓ.detach()) = 1`` but with the policy gradient), as TRL when ``num_iterations = 1``.
    ``advantages``: (B,) one per completion, or (B, T). ``mask``: (B, T), 1 for the completion's
    tokens, 0 for padding (log-probs there must still be finite: they are multiplied by 0, as in TRL).
    ``max_completion_length`` ("dr_grpo"): the constant normaliser, at least every row's active tokens
    (rows may be packed prompt + completion, the mask selecting the completion).
    ``epsilon_high``: ``None`` means ``epsilon_low``. ``beta > 0`` adds the k3 KL to ``ref_logprobs``,
    times ``ρ`` unless ``kl_bias_correction=False`` (``None``: True, TRL's default).
    ``num_items_in_batch`` ("dapo"): active tokens of every micro-batch of the optimizer step summed
    over all ``num_processes`` processes (default: this ``mask``'s count, allowed only for one
    micro-batch on one process). See the module docstring for ``loss_type``. ``importance_weights`` (B, T):
    multiply each token's surrogate (not its KL term), as TRL applies truncated importance sampling
    (rl/importance_sampling.py).
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if not isinstance(logprobs, torch.Tensor) or logprobs.dim() != 2 or not logprobs.is_floating_point():
        raise ValueError("logprobs must be a (batch, completion length) floating-point tensor, got "
                         f"{tuple(logprobs.shape) if isinstance(logprobs, torch.Tensor) else type(logprobs).__name__}")
    shape = logprobs.shape
    _check_settings(loss_type, epsilon_low, epsilon_high, beta, ref_logprobs, kl_bias_correction, max_completion_length,
                    num_items_in_batch, num_processes, gradient_accumulation_steps,
                    int(mask.sum(-1).max()) if isinstance(mask, torch.Tensor) and mask.numel() else 0)
    _check_shape("mask", mask, shape)
    if old_logprobs is not None:
        _check_shape("old_logprobs", old_logprobs, shape)
    if ref_logprobs is not None:
        _check_shape("ref_logprobs", ref_logprobs, shape)
    if importance_weights is not None:
        _check_shape("importance_weights", importance_weights, shape)
    if not isinstance(advantages, torch.Tensor) or advantages.shape not in (shape[:1], shape):
        got = tuple(advantages.shape) if isinstance(advantages, torch.Tensor) else type(advantages).__name__
        raise ValueError(f"advantages must have shape ({shape[0]},) or {tuple(shape)}, got {got}")

    mask = mask.to(logprobs.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    ratio = torch.exp(logprobs - old)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    if importance_weights is not None:
        per_token = per_token * importance_weights.to(per_token.dtype)
    kl = None
    if beta > 0.0:
        log_ref_over_policy = ref_logprobs - logprobs
        kl = torch.exp(log_ref_over_policy) - log_ref_over_policy - 1.0
        if kl_bias_correction is not False:
            kl = kl * ratio
        per_token = per_token + beta * kl

    masked = per_token * mask
    if loss_type == "grpo":
        loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / gradient_accumulation_steps
    elif loss_type == "bnpo":
        loss = masked.sum() / mask.sum().clamp(min=1.0) / gradient_accumulation_steps
    elif loss_type == "dr_grpo":
        loss = masked.sum() / (shape[0] * max_completion_length) / gradient_accumulation_steps
    else:
        tokens = mask.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
        loss = masked.sum() / (tokens.to(logprobs.device, logprobs.dtype).clamp(min=1.0) / num_processes)

    ratio, advantages = ratio.detach(), advantages.detach()
    low = (ratio < 1.0 - epsilon_low) & (advantages < 0)
    high = (ratio > 1.0 + epsilon_high) & (advantages > 0)
    return PolicyLoss(loss=loss, clip_low=_token_mean(low, mask), clip_high=_token_mean(high, mask),
                      clip_region=_token_mean(low | high, mask), kl=None if kl is None else _token_mean(kl, mask))


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Detached mean over the active tokens (0 when there are none), as TRL's logged metrics."""
    return (values.detach().to(mask.dtype) * mask).sum() / mask.sum().clamp(min=1.0)
