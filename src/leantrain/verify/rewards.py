"""Reward functions for RL with verifiable rewards, and scoring a batch of completions with them.

A reward function has TRL's signature (``GRPOTrainer``'s ``reward_funcs``):
``f(prompts, completions, **columns) -> list[float | None]``, one reward per completion, None
meaning "not applicable". Completions are strings, or chat messages
(``[{"role": "assistant", "content": ...}]``) as TRL passes them; every dataset column arrives as a
keyword argument holding one value per completion. The built-ins below can be handed to TRL as
they are. Each lists the columns it reads in a ``required_columns`` attribute, which
``score_completions`` checks before calling it.

``score_completions`` runs several reward functions for one RL step. Each call runs in a worker
thread with a timeout, so it works off the main thread too (math-verify's ``signal.alarm`` does
not). A call that raises or times out is counted and logged
(logger ``"leantrain.rl"``) and its rewards become NaN, never 0: verl once scored every MATH
answer 0 because such a failure was swallowed (verl PR #5635). ``group_advantages`` then leaves those
samples unscored. The total is the weighted sum over the functions that scored the row, as TRL's
``nansum``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from leantrain.extras import require
from leantrain.verify.answers import boxed_answer, last_number, numbers_equal, parse_number

logger = logging.getLogger("leantrain.rl")

RewardFunction = Callable[..., Sequence[float | None]]
Completion = str | Sequence[Mapping[str, Any]]

# Keyword arguments that TRL 1.16.0 passes to reward functions besides the dataset's columns
# (GRPOTrainer._calculate_rewards); they are not part of a reasoning-gym entry.
_TRL_ARGUMENTS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})


class AnswerChecker(Protocol):
    """What ``reasoning_gym_reward`` needs: reasoning-gym's ``ProceduralDataset.score_answer``."""

    def score_answer(self, answer: str | None, entry: dict[str, Any]) -> float: ...


def completion_text(completion: Completion) -> str:
    """The text of one completion: a string as it is, or the content of a chat completion's last assistant message."""
    if isinstance(completion, str):
        return completion
    replies = [message for message in completion if isinstance(message, Mapping) and message.get("role") == "assistant"]
    if not replies or not isinstance(replies[-1].get("content"), str):
        raise ValueError("a completion must be a string or chat messages ending in an assistant message with string "
                         f"content, got {completion!r:.200}")
    return replies[-1]["content"]


def _column(columns: Mapping[str, Any], name: str, size: int, function: str) -> Sequence[Any]:
    """Column ``name`` of the keyword arguments, checked to hold one value per completion."""
    if name not in columns:
        raise ValueError(f"{function} reads column {name!r}, which is missing; columns given: "
                         f"{', '.join(sorted(columns)) or 'none'}")
    values = columns[name]
    if len(values) != size:
        raise ValueError(f"column {name!r} has {len(values)} values for {size} completions")
    return values


def _reward_function(function: Callable[..., list[float | None]], name: str,
                     required_columns: tuple[str, ...]) -> RewardFunction:
    """``function`` under ``name`` (TRL logs rewards by ``__name__``), with the columns it reads."""
    function.__name__ = function.__qualname__ = name
    function.required_columns = required_columns  # type: ignore[attr-defined]
    return function


def numeric_reward(column: str = "answer", tolerance: float = 1e-6) -> RewardFunction:
    """A reward function: 1.0 when the completion's answer equals column ``column`` as a number, else 0.0.

    The answer is the last ``\\boxed{...}`` if the completion has one, otherwise its last number
    (SmolLM2-135M-Instruct answers "The final answer ... is 6."). Numbers are compared
    exactly as fractions within an absolute ``tolerance`` (``answers.numbers_equal``). A row whose
    reference is None or not a number gets None (not applicable), as TRL's ``accuracy_reward`` does
    for a gold answer it cannot parse.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")

    def reward(prompts: Sequence[Any], completions: Sequence[Completion], **columns: Any) -> list[float | None]:
        references = _column(columns, column, len(completions), "numeric_reward")
        rewards: list[float | None] = []
        for completion, reference in zip(completions, references, strict=True):
            if reference is None or parse_number(reference) is None:
                rewards.append(None)
                continue
            text = completion_text(completion)
            answer = boxed_answer(text)
            if answer is None:
                answer = last_number(text)
            rewards.append(float(answer is not None and numbers_equal(answer, reference, tolerance)))
        return rewards

    return _reward_function(reward, "numeric_reward", (column,))


def math_verify_reward(column: str = "answer") -> RewardFunction:
    """A reward function scoring with Hugging Face's math-verify: ``verify(parse(reference), parse(completion))``.

    math-verify parses the whole completion with its default extraction (LaTeX, then plain
    expressions), as DARS's released code scores. A reference it cannot parse gives None (TRL's
    ``accuracy_reward``). math-verify's own timeouts use ``signal.alarm``, which works only on the
    main thread; off it they are off (as TRL does), and ``score_completions``'s timeout applies.
    Needs math-verify (``pip install 'leantrain[rl]'``).
    """
    math_verify = require("math_verify", "math_verify_reward")
    parse, verify = math_verify.parse, math_verify.verify

    def reward(prompts: Sequence[Any], completions: Sequence[Completion], **columns: Any) -> list[float | None]:
        references = _column(columns, column, len(completions), "math_verify_reward")
        on_main_thread = threading.current_thread() is threading.main_thread()
        parsing_timeout, verify_timeout = (10, 5) if on_main_thread else (None, None)
        rewards: list[float | None] = []
        for completion, reference in zip(completions, references, strict=True):
            gold = [] if reference is None else parse(str(reference), parsing_timeout=parsing_timeout)
            if not gold:
                rewards.append(None)
                continue
            answer = parse(completion_text(completion), parsing_timeout=parsing_timeout)
            rewards.append(float(verify(gold, answer, timeout_seconds=verify_timeout)))
        return rewards

    return _reward_function(reward, "math_verify_reward", (column,))


def reasoning_gym_reward(dataset: AnswerChecker,
                         extract: Callable[[str], str | None] = last_number) -> RewardFunction:
    """A reward function scoring with a reasoning-gym dataset's own checker, ``dataset.score_answer(answer, entry)``.

    ``answer`` is ``extract(completion)``, the last number by default (as ``numeric_reward``;
    None when there is none, which reasoning-gym scores 0). ``entry`` is rebuilt for each row from
    the columns, since TRL forwards every dataset column but the prompt: a dataset made of
    reasoning-gym entries gives back their ``answer`` and ``metadata``. TRL's own keyword arguments
    (``trainer_state``, ``log_metric``, …) are left out. Any object with that ``score_answer``
    method will do (reasoning-gym==0.1.25's datasets have it).
    """
    if not callable(getattr(dataset, "score_answer", None)):
        raise ValueError(f"dataset must have a score_answer(answer, entry) method (a reasoning-gym dataset), "
                         f"got {type(dataset).__name__}")

    def reward(prompts: Sequence[Any], completions: Sequence[Completion], **columns: Any) -> list[float | None]:
        _column(columns, "answer", len(completions), "reasoning_gym_reward")
        fields = {name: values for name, values in columns.items() if name not in _TRL_ARGUMENTS}
        return [float(dataset.score_answer(extract(completion_text(completion)),
                                           {name: values[row] for name, values in fields.items()}))
                for row, completion in enumerate(completions)]

    return _reward_function(reward, "reasoning_gym_reward", ("answer",))


@dataclass(frozen=True)
class Scores:
    """The rewards of one batch of completions.

    ``rewards``: shape (N,), float32, Σ_k w_k r_k over the functions that scored each row (TRL's
    ``nansum``); NaN where none did, which ``group_advantages`` counts as unscored.
    ``per_function``: shape (N, F), float32, unweighted, NaN where a function returned None or NaN
    or its call raised or timed out. ``names``: the functions' names, in the column order of
    ``per_function``. ``failures`` and ``timeouts``: per name, calls that raised and calls that did
    not finish in time (0 or 1 for one batch; add them up over steps). ``unscored``: per name, rows
    that are NaN.
    """

    rewards: torch.Tensor
    per_function: torch.Tensor
    names: tuple[str, ...]
    failures: dict[str, int]
    timeouts: dict[str, int]
    unscored: dict[str, int]


def _named(reward_functions: Sequence[RewardFunction] | Mapping[str, RewardFunction]) -> dict[str, RewardFunction]:
    """The reward functions by name: a mapping's keys, or each function's ``__name__`` (as TRL logs them)."""
    if isinstance(reward_functions, Mapping):
        named = dict(reward_functions)
    elif isinstance(reward_functions, Sequence) and not isinstance(reward_functions, str):
        named = {}
        for function in reward_functions:
            name = getattr(function, "__name__", None) or type(function).__name__
            if name in named:
                raise ValueError(f"two reward functions are named {name!r}; pass a mapping {{name: function}} "
                                 "to give them distinct names")
            named[name] = function
    else:
        raise ValueError(f"reward_functions must be a list or a mapping {{name: function}}, "
                         f"got {type(reward_functions).__name__}")
    if not named:
        raise ValueError("reward_functions must not be empty")
    for name, function in named.items():
        if not callable(function):
            raise ValueError(f"reward function {name!r} must be callable, got {type(function).__name__}")
    return named


def _call(name: str, function: RewardFunction, arguments: dict[str, Any], timeout: float) -> tuple[str, Any]:
    """``("ok", output)``, ``("failed", error)`` or ``("timeout", None)`` of one call in a daemon worker thread.

    Waiting on a thread works on any thread, unlike ``signal.alarm``. A call that times out is
    abandoned, not stopped (Python cannot stop a thread): its thread is a daemon, so it never keeps
    the process alive, and whatever it returns later is dropped.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["ok"] = function(**arguments)
        except BaseException as error:
            outcome["failed"] = error

    worker = threading.Thread(target=run, name=f"leantrain-reward-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return "timeout", None
    return ("ok", outcome["ok"]) if "ok" in outcome else ("failed", outcome["failed"])


def _row_rewards(name: str, output: Any, size: int) -> list[float]:
    """A reward function's output as ``size`` floats, None and NaN as NaN; anything else is an error naming it."""
    if isinstance(output, (str, bytes, Mapping)) or not isinstance(output, (Sequence, torch.Tensor)):
        raise ValueError(f"reward function {name!r} must return a list of rewards (numbers or None), "
                         f"got {type(output).__name__}")
    if len(output) != size:
        raise ValueError(f"reward function {name!r} returned {len(output)} rewards for {size} completions; "
                         "it must return one per completion")
    rewards = []
    for row, value in enumerate(output):
        if value is None:
            rewards.append(math.nan)
            continue
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError(value)
            reward = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"reward function {name!r} returned {value!r} for completion {row}; "
                             "a reward is a number, or None for not applicable") from None
        if math.isinf(reward):
            raise ValueError(f"reward function {name!r} returned {reward} for completion {row}; "
                             "rewards must be finite (None or NaN: unscored)")
        rewards.append(reward)
    return rewards


def score_completions(reward_functions: Sequence[RewardFunction] | Mapping[str, RewardFunction],
                      prompts: Sequence[Any], completions: Sequence[Completion],
                      columns: Mapping[str, Sequence[Any]] | None = None, timeout: float = 60.0,
                      weights: Sequence[float] | None = None) -> Scores:
    """Score ``completions`` with every reward function; failures and timeouts are NaN, counted and logged.

    ``reward_functions``: a list (named by ``__name__``) or a mapping ``{name: function}``, each with
    TRL's signature. ``prompts``: one per completion. ``columns``: dataset columns, one value per
    completion each, passed as keyword arguments. ``timeout``: seconds one call may take; the call
    runs in a worker thread, so this works from any thread. ``weights``: one per function (default
    1 each) for the total ``Σ_k w_k r_k`` (TRL's ``reward_weights``).
    A call that raises or times out is logged to ``"leantrain.rl"`` and counted, and its rewards are
    NaN. A None or NaN reward is NaN for that function's row; the total ignores NaN and is NaN only
    when every function gave NaN for the row. An output of the wrong length or type is an error
    naming the function, as in TRL.
    """
    functions = _named(reward_functions)
    size = len(completions)
    if size == 0:
        raise ValueError("no completions to score")
    if len(prompts) != size:
        raise ValueError(f"prompts and completions must match one to one, got {len(prompts)} prompts "
                         f"for {size} completions")
    columns = dict(columns or {})
    for name, values in columns.items():
        if name in ("prompts", "completions"):
            raise ValueError(f"a column cannot be named {name!r}: reward functions take it as their own argument")
        is_list = hasattr(values, "__len__") and not isinstance(values, (str, bytes, Mapping))
        if not is_list or len(values) != size:
            got = f"{len(values)} values" if is_list else f"a {type(values).__name__}"
            raise ValueError(f"column {name!r} must hold one value per completion: {size} expected, got {got}")
    for name, function in functions.items():
        for column in getattr(function, "required_columns", ()):
            if column not in columns:
                raise ValueError(f"reward function {name!r} reads column {column!r}, which is missing; "
                                 f"columns given: {', '.join(sorted(columns)) or 'none'}")
    if weights is None:
        weights = [1.0] * len(functions)
    if len(weights) != len(functions):
        raise ValueError(f"weights must give one weight per reward function: got {len(weights)} weights for "
                         f"{len(functions)} functions ({', '.join(functions)})")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite numbers, got {list(weights)!r}")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")

    table = torch.full((size, len(functions)), math.nan, dtype=torch.float32)
    failures = dict.fromkeys(functions, 0)
    timeouts = dict.fromkeys(functions, 0)
    for index, (name, function) in enumerate(functions.items()):
        arguments = {"prompts": list(prompts), "completions": list(completions),
                     **{column: list(values) for column, values in columns.items()}}
        status, output = _call(name, function, arguments, timeout)
        if status == "ok":
            table[:, index] = torch.tensor(_row_rewards(name, output, size), dtype=torch.float32)
        elif status == "failed":
            failures[name] += 1
            logger.warning("reward function %r raised %s: %s; its %d rewards are NaN (unscored)",
                           name, type(output).__name__, output, size, exc_info=output)
        else:
            timeouts[name] += 1
            logger.warning("reward function %r did not finish within %g s; its %d rewards are NaN (unscored), "
                           "and its thread is left to finish on its own", name, timeout, size)
    unscored = torch.isnan(table)
    rewards = torch.nansum(table * torch.tensor(weights, dtype=torch.float32), dim=1)
    rewards[unscored.all(dim=1)] = math.nan
    return Scores(rewards=rewards, per_function=table, names=tuple(functions), failures=failures,
                  timeouts=timeouts, unscored={name: int(unscored[:, index].sum())
                                               for index, name in enumerate(functions)})
