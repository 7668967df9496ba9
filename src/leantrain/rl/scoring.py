"""Scoring rollouts of problems: decode each completion, call the problems' reward functions with the
rows' prompts and columns, and say which completions are correct.

A completion is *correct* when its reward reaches ``SOLVED`` (1.0: reasoning-gym's and the numeric
checkers' score of a right answer). Accuracy (DARS's per-prompt pass rate, SELF's greedy check)
and pass@k count correct completions; an unscored completion (NaN reward) is not correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from leantrain.data.problems import Problems
from leantrain.rl.rollouts import Rollouts, generate_rollouts
from leantrain.verify.rewards import Scores, score_completions

SOLVED = 1.0


def completion_texts(tokenizer, rollouts: Rollouts) -> list[str]:
    """Each row's completion as text, its end-of-sequence token and padding left out."""
    return [tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
            for ids, mask in zip(rollouts.completion_ids, rollouts.completion_mask, strict=True)]


def score_rollouts(problems: Problems, indices: Sequence[int], rollouts: Rollouts, tokenizer,
                   timeout: float = 60.0) -> Scores:
    """Scores of ``rollouts``, whose ``group`` values index ``indices`` (the problems they answer)."""
    rows = [indices[group] for group in rollouts.group.tolist()]
    prompts, columns = problems.rows(rows)
    return score_completions(problems.reward_functions, prompts, completion_texts(tokenizer, rollouts), columns,
                             timeout=timeout)


def correct(rewards: Tensor) -> Tensor:
    """Boolean per completion: reward >= ``SOLVED`` (NaN: False)."""
    return rewards >= SOLVED


def correct_per_group(rewards: Tensor, group: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """(correct, scored) completions per group ``0 .. groups − 1``, as int64 counts."""
    solved = torch.zeros(groups, dtype=torch.long).index_add_(0, group, correct(rewards).long())
    scored = torch.zeros(groups, dtype=torch.long).index_add_(0, group, (~torch.isnan(rewards)).long())
    return solved, scored


def answer_accuracy(policy: nn.Module, tokenizer, problems: Problems, prompt_ids: Sequence[Sequence[int]], *,
                    max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 64,
                    seed: int = 0) -> float:
    """Share of ``problems`` (prompts ``prompt_ids``) answered correctly by one completion each: greedy at
    ``temperature=0``, else sampled from ``seed`` (the caller's RNG is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rollouts = generate_rollouts(policy, prompt_ids, [1] * len(problems), max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p if temperature else 1.0,
                                     batch_size=batch_size)
    return float(correct(score_rollouts(problems, range(len(problems)), rollouts, tokenizer).rewards).float().mean())
