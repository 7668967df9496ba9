"""The RL training loss of one micro-batch, as the engine calls it: ``loss(model, micro)``.

A rollout batch (``rollout_batch``) holds, per row, the packed prompt + completion
(``TrainingInputs``), the row's advantage and ``step_tokens``: the completion tokens of the whole
optimizer step divided by its rows. The engine weights each micro-batch's loss by its share of the
rows (data/micro_batches.py), so the loss below is written as a mean over rows: with ``"dapo"`` each
micro-batch divides its token sum by ``Σ step_tokens`` over its rows, which makes the weighted sum
over micro-batches and processes Σ tokens / (tokens of the step), DAPO's token mean over the whole
step (TRL's ``num_items_in_batch``). ``"grpo"`` and ``"dr_grpo"`` are row means already; ``"bnpo"``
is TRL's per-micro-batch token mean. Log-probs come from the chunked head (lean/token_logprobs.py),
which never holds the B×L×V logits; an entropy bonus (verl's ``entropy_coeff``, 0.001 in the DARS
runs) subtracts ``entropy_bonus`` × the token-mean entropy. When the batch carries the sampler's
log-probs, the sampler-trainer mismatch is summed per update (``take_mismatch``, over the rows trained), and
``tis`` weighs the tokens by truncated importance sampling (rl/importance_sampling.py).

A row at advantage 0 (every row of a group whose rewards are all equal) has a surrogate of exactly 0 and a
gradient of exactly 0 when the loss has no KL and no entropy term (``idle_rows_are_exact``): such rows are left out
of the forward and backward (``rows_with_gradient``), and each micro-batch's loss is scaled by ``row_share``, the
share of the step's rows trained, so that the gradient, the logged loss and DAPO's token count stay those of the
whole step. At 135M most groups of a step score all 0, and the rows they skip were most of an RL step's time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leantrain.data.micro_batches import micro_batch_count
from leantrain.lean.token_logprobs import token_logprobs
from leantrain.names import POLICY_LOSS_TYPES
from leantrain.rl.importance_sampling import TIS_CAP, TIS_LEVELS, mismatch, truncated_importance_weights
from leantrain.rl.policy_loss import PolicyLoss, policy_loss
from leantrain.rl.rollouts import TrainingInputs
from leantrain.validation import is_positive_int


@dataclass(frozen=True)
class LossSettings:
    """GRPO loss settings (TRL's names): ``loss_type`` aggregation, PPO clip ``epsilon_low`` /
    ``epsilon_high``, KL coefficient ``beta`` (0: no reference model), ``entropy_bonus``, the sampling
    ``temperature`` (log-probs are of logits / T, as TRL), ``max_completion_length`` for "dr_grpo";
    ``chunk_rows`` of the log-prob head (None: as many as fit its ``LOGITS_BYTES``); ``tis``: truncated
    importance sampling of the sampler's tokens, "token" or "sequence" ratios capped at ``tis_cap`` (None: off)."""

    loss_type: str = "dapo"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.0
    entropy_bonus: float = 0.0
    temperature: float = 1.0
    max_completion_length: int | None = None
    chunk_rows: int | None = None
    tis: str | None = None
    tis_cap: float = TIS_CAP

    def __post_init__(self) -> None:
        if self.loss_type not in POLICY_LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {', '.join(POLICY_LOSS_TYPES)}")
        if not self.entropy_bonus >= 0:
            raise ValueError(f"entropy_bonus={self.entropy_bonus!r} must be >= 0")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0 (the log-probs of greedy "
                             "rollouts are not a sampling distribution)")
        if self.tis is not None and self.tis not in TIS_LEVELS:
            raise ValueError(f"tis={self.tis!r} is not one of {', '.join(TIS_LEVELS)} (or None: off)")
        if not self.tis_cap >= 1:
            raise ValueError(f"tis_cap={self.tis_cap!r} must be >= 1")


def longest_first(inputs: TrainingInputs, advantages: Tensor) -> tuple[TrainingInputs, Tensor]:
    """The rows ordered by length, longest first (stable), so that each micro-batch trims its own padding."""
    order = inputs.attention_mask.sum(1).argsort(descending=True, stable=True)
    return inputs.rows(order), advantages[order]


def idle_rows_are_exact(settings: LossSettings) -> bool:
    """Whether leaving the rows at advantage 0 out changes nothing: no KL term (``beta``), no entropy bonus, and a
    loss not averaged over each micro-batch's own tokens ("bnpo", whose micro-batches the rows would change)."""
    return settings.beta == 0 and settings.entropy_bonus == 0 and settings.loss_type != "bnpo"


def rows_with_gradient(inputs: TrainingInputs, advantages: Tensor, minimum: int) -> tuple[TrainingInputs, Tensor]:
    """The rows whose advantage is not 0, in their order, and at least ``minimum`` rows: the shortest rows at
    advantage 0 fill up, so that the engine can split the batch over its processes and micro-batches and the
    optimizer still steps (on a gradient of exactly 0 when no row has any)."""
    if not is_positive_int(minimum):
        raise ValueError(f"minimum={minimum!r} must be an int >= 1 (processes x micro-batches)")
    active = advantages.reshape(len(advantages), -1).ne(0).any(1)
    idle = (~active).nonzero().flatten()
    fill = max(0, minimum - int(active.sum()))
    shortest = idle[inputs.attention_mask[idle].sum(1).argsort(stable=True)[:fill]]
    keep = active.index_fill(0, shortest, True)
    return inputs.rows(keep), advantages[keep]


def batched_logprobs(model: nn.Module, inputs: TrainingInputs, settings: LossSettings,
                     micro_tokens: int | None) -> Tensor:
    """Token log-probs (B, L − 1) of every row, without gradients, in micro-batches of at most ``micro_tokens``
    tokens (``data.micro_batches.micro_batch_count``): the old policy's or the reference model's."""
    rows = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask,
            "logprob_mask": inputs.logprob_mask}
    count = micro_batch_count(rows, 1, 1, micro_tokens)
    out = torch.zeros(inputs.logprob_mask.shape, dtype=torch.float32)
    start = 0
    with torch.no_grad():
        for piece in zip(*(value.tensor_split(count) for value in rows.values()), strict=True):
            micro = _trimmed(dict(zip(rows, piece, strict=True)))
            logprobs = token_logprobs(model, micro["input_ids"], micro["attention_mask"], settings.chunk_rows,
                                      settings.temperature)[0]
            out[start:start + len(logprobs), :logprobs.shape[1]] = logprobs.float().cpu()
            start += len(logprobs)
    return out


def rollout_batch(inputs: TrainingInputs, advantages: Tensor, old_logprobs: Tensor | None = None,
                  ref_logprobs: Tensor | None = None, whole: TrainingInputs | None = None) -> dict[str, Tensor]:
    """The engine's global batch for one update from a rollout batch (see the module docstring), with the
    sampler's log-probs when the rollouts carry them. ``whole``: the step's rows when ``inputs`` are those of them
    that ``rows_with_gradient`` kept (default: ``inputs``); the token count and ``row_share`` are taken from it."""
    whole = inputs if whole is None else whole
    rows, whole_rows = len(inputs.input_ids), len(whole.input_ids)
    tokens = whole.logprob_mask.sum().double()
    batch = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask,
             "logprob_mask": inputs.logprob_mask, "advantages": advantages.float(),
             "step_tokens": torch.full((rows,), float(tokens) / whole_rows, dtype=torch.float64),
             "row_share": torch.full((rows,), rows / whole_rows, dtype=torch.float64)}
    if inputs.sample_logprobs is not None:
        batch["sample_logprobs"] = inputs.sample_logprobs
    if old_logprobs is not None:
        batch["old_logprobs"] = old_logprobs
    if ref_logprobs is not None:
        batch["ref_logprobs"] = ref_logprobs
    return batch


def _trimmed(micro: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The micro-batch without the padding columns that none of its rows uses."""
    width = int(micro["attention_mask"].sum(1).max())
    return {key: (value[:, :width] if key in ("input_ids", "attention_mask") else
                  value[:, :width - 1] if value.dim() == 2 else value) for key, value in micro.items()}


class RLLoss:
    """``loss(model, micro)`` for ``TrainTask.loss``; keeps the last micro-batch's ``PolicyLoss`` and mean
    entropy (detached) in ``last`` / ``last_entropy`` for logging, and the mismatch sums since the last
    ``take_mismatch``."""

    def __init__(self, settings: LossSettings) -> None:
        self.settings = settings
        self.last: PolicyLoss | None = None
        self.last_entropy = float("nan")
        self._mismatch = torch.zeros(3, dtype=torch.float64)

    def take_mismatch(self, total: Callable[[Tensor], Tensor] = lambda sums: sums) -> dict[str, float]:
        """The token means of |log π_train − log π_sample| and of the k3 KL estimate since the last call
        (empty when no micro-batch carried the sampler's log-probs), and the sums reset. ``total`` sums them
        over processes (``Engine.sum_over_processes``: a collective), so that every process reports the
        whole batch's means, as one process would."""
        absolute, k3, tokens = total(self._mismatch).tolist()
        self._mismatch.zero_()
        return {} if tokens == 0 else {"sampler_logprob_gap": absolute / tokens, "sampler_kl": k3 / tokens}

    def __call__(self, model: nn.Module, micro: Mapping[str, Tensor]) -> Tensor:
        s = self.settings
        micro = _trimmed(micro)
        mask = micro["logprob_mask"]
        logprobs, entropy = token_logprobs(model, micro["input_ids"], micro["attention_mask"], s.chunk_rows,
                                           s.temperature)
        dapo = s.loss_type == "dapo"
        weights = None
        if "sample_logprobs" in micro:  # the trainer's log-probs at sampling time: the old policy's, if kept
            trained = micro.get("old_logprobs", logprobs)
            self._mismatch += torch.stack(mismatch(trained, micro["sample_logprobs"], mask)).double().cpu()
            if s.tis is not None:
                weights = truncated_importance_weights(trained, micro["sample_logprobs"], mask, s.tis, s.tis_cap)
        out = policy_loss(logprobs, micro.get("old_logprobs"), micro["advantages"], mask,
                          epsilon_low=s.epsilon_low, epsilon_high=s.epsilon_high, beta=s.beta,
                          ref_logprobs=micro.get("ref_logprobs"), loss_type=s.loss_type,
                          max_completion_length=s.max_completion_length if s.loss_type == "dr_grpo" else None,
                          num_items_in_batch=micro["step_tokens"].sum() if dapo else None,
                          importance_weights=weights)
        self.last = out
        share = micro["row_share"][0].to(out.loss.dtype) if "row_share" in micro else 1.0  # the rows left out add 0
        mean_entropy = (entropy * mask).sum() / mask.sum().clamp(min=1)
        self.last_entropy = float(mean_entropy.detach())
        if s.entropy_bonus:
            return (out.loss - s.entropy_bonus * mean_entropy) * share
        return out.loss * share
