"""Problems for RL with verifiable rewards: prompts, the columns their reward functions read, and the
reward functions themselves, split into training and held-out problems by distinct prompt.

Sources (``load_problems``):

- ``"arithmetic"`` (the built-in default): reasoning-gym ``chain_sum`` problems, half "2 one-digit terms"
  (SmolLM2-135M-Instruct: pass@1 ≈ 0.25 at T = 1, pass@8 ≈ 0.9) and half "2–3 terms of 1–2 digits"
  (pass@1 ≈ 0.02), measured with 16 new tokens at T = 1 before this recipe existed. The mix gives a
  starting pass@1 of about 0.14: easy prompts GRPO learns from, and hard ones where a first round of
  rollouts is often all wrong, which is what DARS's extra rollouts are for. Scored by reasoning-gym's
  own ``score_answer`` on the last number of the completion (the model answers in a sentence).
- ``"rg:TASK"``: any reasoning-gym task with its default configuration, scored by its own checker.
- a ``.jsonl`` or ``.csv`` file with a ``prompt`` column (a string, or in JSONL a list of chat messages)
  and an ``answer`` column, scored by ``numeric_reward`` (last number or ``\\boxed{}``); other columns
  are passed to reward functions too. Bring your own reward functions with ``reward_functions``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leantrain.data.rows import read_rows
from leantrain.extras import require
from leantrain.validation import is_positive_int
from leantrain.verify.rewards import RewardFunction, numeric_reward, reasoning_gym_reward

Prompt = str | list[dict[str, str]]

# The built-in default: (reasoning-gym task, its settings), drawn in equal shares.
ARITHMETIC = (("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
              ("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}))
POOL = 4096  # problems drawn per reasoning-gym configuration before keeping the distinct ones


@dataclass(frozen=True)
class Problems:
    """``prompts[i]`` with ``columns[name][i]`` for each column (``answer`` at least), and the reward
    functions (TRL's signature) that score completions of them. ``stratum[i]``: which configuration
    problem ``i`` came from, so that splits keep the mix."""

    prompts: list[Prompt]
    columns: dict[str, list[Any]]
    reward_functions: dict[str, RewardFunction]
    name: str
    stratum: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError(f"{self.name}: no problems (no prompts)")
        if "answer" not in self.columns:
            raise ValueError(f"{self.name}: no 'answer' column; columns: {', '.join(self.columns) or 'none'}")
        for name, values in self.columns.items():
            if len(values) != len(self.prompts):
                raise ValueError(f"{self.name}: column {name!r} has {len(values)} values for {len(self.prompts)} "
                                 "prompts")
        if not self.stratum:
            object.__setattr__(self, "stratum", [0] * len(self.prompts))

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, indices: Sequence[int]) -> Problems:
        return Problems([self.prompts[i] for i in indices],
                        {name: [values[i] for i in indices] for name, values in self.columns.items()},
                        self.reward_functions, self.name, [self.stratum[i] for i in indices])

    def rows(self, indices: Sequence[int]) -> tuple[list[Prompt], dict[str, list[Any]]]:
        """The prompts and columns of ``indices`` (repeats allowed): what reward functions are called with."""
        return [self.prompts[i] for i in indices], {name: [values[i] for i in indices]
                                                    for name, values in self.columns.items()}

    def split(self, held_out: int, seed: int) -> tuple[Problems, Problems]:
        """(training, held-out): ``held_out`` problems with distinct prompts, drawn in equal shares from each
        stratum, and every problem whose prompt differs from all of them. A prompt never lands in both."""
        if not is_positive_int(held_out):
            raise ValueError(f"held_out={held_out!r} must be an integer >= 1")
        first: dict[str, int] = {}
        for index, prompt in enumerate(self.prompts):
            first.setdefault(json.dumps(prompt), index)
        strata: dict[int, list[int]] = {}
        for index in first.values():
            strata.setdefault(self.stratum[index], []).append(index)
        if held_out >= len(first):
            raise ValueError(f"{self.name}: held_out={held_out} leaves no training problems: there are only "
                             f"{len(first)} distinct prompts")
        rng = random.Random(seed)
        for indices in strata.values():
            rng.shuffle(indices)
        chosen: list[int] = []
        shares = [held_out // len(strata) + (k < held_out % len(strata)) for k in range(len(strata))]
        for share, indices in zip(shares, strata.values(), strict=True):
            if share > len(indices) - 1:
                raise ValueError(f"{self.name}: held_out={held_out} asks {share} problems of a configuration that "
                                 f"has {len(indices)} distinct prompts; use a smaller held-out set")
            chosen += indices[:share]
        held = {json.dumps(self.prompts[i]) for i in chosen}
        training = [i for i in range(len(self)) if json.dumps(self.prompts[i]) not in held]
        return self.subset(training), self.subset(sorted(chosen))


class _TaskRouter:
    """reasoning-gym's checkers by task name: ``score_answer`` asks the entry's own task."""

    def __init__(self, datasets: Mapping[str, Any]) -> None:
        self.datasets = dict(datasets)

    def score_answer(self, answer: str | None, entry: dict[str, Any]) -> float:
        return self.datasets[entry["metadata"]["source_dataset"]].score_answer(answer, entry)


def reasoning_gym_problems(configurations: Sequence[tuple[str, Mapping[str, Any]]], size: int, seed: int,
                           name: str) -> Problems:
    """``size`` problems per configuration (distinct prompts within each), one stratum per configuration."""
    reasoning_gym = require("reasoning_gym", f"the problem set {name!r}")

    prompts, answers, metadata, stratum, datasets = [], [], [], [], {}
    for index, (task, settings) in enumerate(configurations):
        try:
            dataset = reasoning_gym.create_dataset(task, size=POOL, seed=seed + index, **settings)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"reasoning-gym task {task!r} with {dict(settings)} cannot be built: {error}") from error
        datasets[task] = dataset
        seen: set[str] = set()
        for entry in dataset:
            if entry["question"] in seen:
                continue
            seen.add(entry["question"])
            prompts.append(entry["question"])
            answers.append(entry["answer"])
            metadata.append(entry["metadata"])
            stratum.append(index)
            if len(seen) == size:
                break
    reward = reasoning_gym_reward(_TaskRouter(datasets))
    return Problems(prompts, {"answer": answers, "metadata": metadata}, {"reasoning_gym": reward}, name, stratum)


def file_problems(path: str | Path) -> Problems:
    """Problems from a JSONL or CSV file with ``prompt`` and ``answer`` columns (see the module docstring)."""
    path = Path(path)
    rows = read_rows(path, "problems file")
    if not rows:
        raise ValueError(f"{path} holds no problems")
    for number, row in enumerate(rows, start=1):
        missing = [column for column in ("prompt", "answer") if column not in row or row[column] in (None, "")]
        if missing:
            raise ValueError(f"{path}: problem {number} has no {' or '.join(missing)} column "
                             f"(it has {', '.join(row) or 'nothing'}); every problem needs a prompt and an answer")
    names = list(rows[0])
    columns = {name: [row.get(name) for row in rows] for name in names if name != "prompt"}
    return Problems([row["prompt"] for row in rows], columns, {"numeric": numeric_reward()}, path.name)


def check_source(source: str) -> None:
    """Raise ValueError for a ``source`` that is no problem set, and MissingExtra when its package is not
    installed: what ``load_problems`` would find first, found before any work."""
    if source == "arithmetic" or source.startswith("rg:"):
        require("reasoning_gym", f"the problem set {source!r}")
    elif Path(source).suffix not in (".jsonl", ".csv"):
        raise ValueError(f"problems {source!r} must be 'arithmetic', 'rg:TASK' (a reasoning-gym task) or a "
                         ".jsonl/.csv file with prompt and answer columns")


def load_problems(source: str, size: int = 2048, seed: int = 0) -> Problems:
    """``"arithmetic"``, ``"rg:TASK"`` or a JSONL/CSV path (see the module docstring); ``size``: problems
    per reasoning-gym configuration."""
    if not is_positive_int(size):
        raise ValueError(f"size={size!r} must be an integer >= 1")
    check_source(source)
    if source == "arithmetic":
        return reasoning_gym_problems(ARITHMETIC, size, seed, source)
    if source.startswith("rg:"):
        return reasoning_gym_problems(((source[3:], {}),), size, seed, source)
    return file_problems(source)
