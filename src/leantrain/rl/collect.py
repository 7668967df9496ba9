"""One RL step's rollouts, as each algorithm collects them: which prompts, how many completions each,
their rewards and advantages.

- ``grpo``: ``rollouts`` completions of every prompt (DeepSeekMath §4.1; TRL's ``num_generations``).
- ``dars``: DARS (Yang et al. 2025, arXiv 2508.13755, released code ``RayDARSTrainer.fit``): a first round
  of ``rollouts`` per prompt estimates each prompt's accuracy; a second round gives the prompts under
  50 % the extra rollouts of ``dars_budget`` (Equal Treatment or Hardness Weighted); the groups, now of
  different sizes, are scored together, and groups whose accuracy is 0 or 1 are dropped (the
  zero-variance filter). ``second_saved``: of the prompts with no correct completion in round 1, the
  share that has one after round 2.
- ``self``: SELF (Nguyen et al. 2025, arXiv 2510.02230, released ``RayMaxPPOTrainer.fit``): one greedy
  completion per prompt first; prompts whose greedy answer is already correct are skipped, then GRPO
  on the rest. With ``self_refill`` further prompts are drawn until the step has its number of
  prompts (the released code does not refill; it skips a step that keeps none, here the next prompts
  are drawn instead).

Every completion generated (greedy pre-pass included) counts in ``generated_tokens``, so runs can be
compared at an equal budget of generated tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leantrain.data.problems import Problems
from leantrain.rl.advantages import group_advantages
from leantrain.rl.dars import dars_budget
from leantrain.rl.rollouts import Rollouts, TrainingInputs, generate_rollouts
from leantrain.rl.scoring import correct, correct_per_group, score_rollouts

ALGORITHMS = ("grpo", "dars", "self")
SELF_MAX_DRAWS = 16  # prompt draws a SELF step may make before it trains on what it has


@dataclass(frozen=True)
class CollectSettings:
    """How one step's rollouts are drawn (see the module docstring). ``prompts``: prompts per step
    (SELF: prompts checked per draw); ``rollouts``: completions per prompt (DARS: in round 1);
    ``dars_rule`` / ``max_rollouts``: DARS's rule and its cap N_max; ``scale``: the advantage scaling;
    ``drop_zero_variance``: drop groups with no learning signal (DARS's filter); ``engine`` / ``dtype``: how the
    rollouts are generated (``generate_rollouts``)."""

    algorithm: str
    prompts: int
    rollouts: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    scale: str = "group"
    dars_rule: str = "et"
    max_rollouts: int | None = None
    drop_zero_variance: bool = False
    self_refill: bool = False
    batch_size: int = 64
    engine: str = "leantrain"
    dtype: str = "fp32"


@dataclass(frozen=True)
class StepRollouts:
    """``inputs`` (packed rows), ``advantages`` and ``group`` (a problem index per row) to train on;
    ``next_cursor``: where the prompt stream continues; ``metrics`` for the step's record."""

    inputs: TrainingInputs
    advantages: Tensor
    problem: Tensor
    next_cursor: int
    metrics: dict[str, float]


def concat_inputs(parts: list[TrainingInputs], pad: int) -> TrainingInputs:
    """Rows of several ``TrainingInputs``, right-padded to the longest."""
    width = max(part.input_ids.shape[1] for part in parts)

    def padded(name: str, value: int, shift: int = 0) -> Tensor:
        return torch.cat([nn.functional.pad(getattr(part, name), (0, width - shift - getattr(part, name).shape[1]),
                                            value=value) for part in parts])

    sampled = all(part.sample_logprobs is not None for part in parts)
    return TrainingInputs(padded("input_ids", pad), padded("attention_mask", 0), padded("logprob_mask", 0, 1),
                          padded("sample_logprobs", 0, 1) if sampled else None)


class Collector:
    """``collect(policy, cursor)`` → ``StepRollouts``. ``prompt_ids[i]`` are the token ids of problem ``i``;
    ``stream(position)`` gives the problem at a position of the (endless) prompt stream."""

    def __init__(self, settings: CollectSettings, problems: Problems, prompt_ids: list[list[int]],
                 stream: Callable[[int], int], tokenizer) -> None:
        if settings.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={settings.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        self.settings, self.problems, self.prompt_ids = settings, problems, prompt_ids
        self.stream, self.tokenizer = stream, tokenizer
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    def _generate(self, policy: nn.Module, problems: list[int], counts: list[int], temperature: float
                  ) -> Rollouts:
        s = self.settings
        started = time.perf_counter()
        rollouts = generate_rollouts(policy, [self.prompt_ids[i] for i in problems], counts,
                                     max_new_tokens=s.max_new_tokens, temperature=temperature,
                                     top_p=s.top_p if temperature else 1.0, batch_size=s.batch_size,
                                     engine=s.engine, dtype=s.dtype)
        self.generation_seconds += time.perf_counter() - started
        self.generated_tokens += int(rollouts.completion_lengths.sum())
        return rollouts

    def _score(self, problems: list[int], rollouts: Rollouts) -> Tensor:
        return score_rollouts(self.problems, problems, rollouts, self.tokenizer).rewards

    def collect(self, policy: nn.Module, cursor: int) -> StepRollouts:
        self.generated_tokens, self.generation_seconds = 0, 0.0
        s = self.settings
        metrics: dict[str, float] = {}
        if s.algorithm == "self":
            problems, cursor = self._self_prompts(policy, cursor, metrics)
        else:
            problems = [self.stream(cursor + i) for i in range(s.prompts)]
            cursor += s.prompts
        rollouts = self._generate(policy, problems, [s.rollouts] * len(problems), s.temperature)
        rewards = self._score(problems, rollouts)
        group, parts = rollouts.group, [rollouts.training_inputs()]
        if s.algorithm == "dars":
            round_two, extra_rewards = self._dars_round_two(policy, problems, group, rewards, metrics)
            if round_two is not None:
                group = torch.cat([group, round_two.group])
                rewards = torch.cat([rewards, extra_rewards])
                parts.append(round_two.training_inputs())
        inputs = concat_inputs(parts, rollouts.pad_token_id)
        advantages = group_advantages(rewards, group, scale=s.scale)
        solved, scored = correct_per_group(rewards, group, len(problems))
        signal = (solved > 0) & (solved < scored)
        keep = torch.ones(len(group), dtype=torch.bool)
        if s.drop_zero_variance and bool(signal.any()):
            keep = signal[group]  # a step where no group has signal keeps its rows, at advantage 0
        scored_rewards = rewards[~torch.isnan(rewards)]
        metrics.update({
            "reward_mean": float(scored_rewards.mean()) if len(scored_rewards) else math.nan,
            "reward_std": float(scored_rewards.std()) if len(scored_rewards) > 1 else math.nan,
            "accuracy": float(correct(rewards).float().mean()),
            "frac_zero_std": advantages.zero_std_groups / max(advantages.groups, 1),
            "unscored": advantages.unscored, "prompts": len(problems), "rollouts": len(group),
            "trained_rows": int(keep.sum()), "generated_tokens": self.generated_tokens,
            "generation_seconds": self.generation_seconds,
        })
        problem_of_row = torch.tensor(problems, dtype=torch.long)[group]
        return StepRollouts(inputs.rows(keep), advantages.values[keep], problem_of_row[keep], cursor, metrics)

    def _dars_round_two(self, policy: nn.Module, problems: list[int], group: Tensor, rewards: Tensor,
                        metrics: dict[str, float]) -> tuple[Rollouts | None, Tensor]:
        s = self.settings
        solved, scored = correct_per_group(rewards, group, len(problems))
        accuracy = [float(c) / float(n) if n else math.nan for c, n in zip(solved, scored, strict=True)]
        totals = [s.rollouts if math.isnan(a) else dars_budget(a, s.rollouts, s.dars_rule, s.max_rollouts)
                  for a in accuracy]
        extra = [total - s.rollouts for total in totals]
        unsolved = [i for i, c in enumerate(solved.tolist()) if c == 0 and scored[i] > 0]
        metrics["round_one_accuracy"] = float(correct(rewards).float().mean())
        metrics["extra_rollouts"] = sum(extra)
        if sum(extra) == 0:
            metrics["second_saved"] = 0.0 if unsolved else math.nan
            return None, rewards[:0]
        round_two = self._generate(policy, problems, extra, s.temperature)
        second = self._score(problems, round_two)
        gained, _ = correct_per_group(second, round_two.group, len(problems))
        metrics["second_saved"] = (sum(int(gained[i] > 0) for i in unsolved) / len(unsolved)) if unsolved else math.nan
        return round_two, second

    def _self_prompts(self, policy: nn.Module, cursor: int, metrics: dict[str, float]) -> tuple[list[int], int]:
        """SELF's greedy pre-pass over draws of ``prompts`` prompts: keep the ones the greedy answer misses."""
        s = self.settings
        kept: list[int] = []
        checked = 0
        for _ in range(SELF_MAX_DRAWS):
            drawn = [self.stream(cursor + i) for i in range(s.prompts)]
            cursor += s.prompts
            checked += len(drawn)
            greedy = self._generate(policy, drawn, [1] * len(drawn), 0.0)
            solved = correct(self._score(drawn, greedy))
            kept += [problem for problem, done in zip(drawn, solved.tolist(), strict=True) if not done]
            if (kept and not s.self_refill) or len(kept) >= s.prompts:
                break
        if not kept:  # every draw solved greedily: train on the last one (its groups carry little signal)
            kept = drawn
        metrics["self_checked"] = checked
        metrics["self_kept"] = len(kept[:s.prompts])
        return kept[:s.prompts], cursor
