"""leantrain.rl's answer extraction, built-in reward functions and score_completions.

Extraction is checked on hand-made strings, among them the default model's own way of answering
("The final answer to this arithmetic problem is 6.", research/next_round.md §5). score_completions
is checked to turn a raising or hanging reward function into counted, logged NaN rewards (never 0,
research/rl_hyperfit.md §6.1), from the main thread and from a worker thread.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import types
from fractions import Fraction
from typing import Any

import pytest
import reasoning_gym
import torch

from leantrain.rl import group_advantages
from leantrain.verify.answers import boxed_answer, last_number, numbers_equal, parse_number
from leantrain.verify.rewards import (
    Scores,
    completion_text,
    math_verify_reward,
    numeric_reward,
    reasoning_gym_reward,
    score_completions,
)

# ---------------------------------------------------------------- answer extraction


@pytest.mark.parametrize(("text", "expected"), [
    ("The final answer to this arithmetic problem is 6.", "6"),
    ("The temperature dropped to -3.5 degrees.", "-3.5"),
    ("-3.5", "-3.5"),
    ("In all 1,234 apples.", "1,234"),
    ("Total: 1,234,567.25!", "1,234,567.25"),
    ("She ate 3/4 of the pie.", "3/4"),
    ("It is .5 now", ".5"),
    ("First 3, then 4, and finally 12.", "12"),
    ("5-3", "3"),  # a minus after an operand is an operator
    ("x = -7", "-7"),
    ("(2)-3", "3"),
    ("1,2345", "2345"),  # not a thousands separator: groups have three digits
    ("version 1.2.3", "1.2"),
    ("答案是6", "6"),
    ("There is no number here.", None),
    ("", None),
])
def test_last_number(text: str, expected: str | None) -> None:
    assert last_number(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (r"So \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{ 42 }", "42"),
    (r"First \boxed{3}, then \boxed{x^{2} + \sqrt{4}}", r"x^{2} + \sqrt{4}"),
    (r"\boxed{3} and a truncated \boxed{\frac{1}{", "3"),  # the last one never closes
    (r"\fbox{7}", "7"),
    (r"\boxed {5}", "5"),
    ("no box, just 6", None),
    (r"\boxed{", None),
])
def test_boxed_answer(text: str, expected: str | None) -> None:
    assert boxed_answer(text) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ("6", Fraction(6)), ("6.", Fraction(6)), ("+6", Fraction(6)), ("06", Fraction(6)), ("6.0", Fraction(6)),
    ("-3.5", Fraction(-7, 2)), ("−3.5", Fraction(-7, 2)), (".5", Fraction(1, 2)),
    ("1,234", Fraction(1234)), ("1{,}234", Fraction(1234)), ("$1,234.5$", Fraction(2469, 2)),
    ("3/4", Fraction(3, 4)), (r"\frac{1}{2}", Fraction(1, 2)), (r"\dfrac{3}{4}", Fraction(3, 4)),
    (r"-\frac{1}{2}", Fraction(-1, 2)), (r"\frac{-1}{2}", Fraction(-1, 2)),
    (7, Fraction(7)), (0.25, Fraction(1, 4)),
    ("3/0", None), (r"\frac{1}{0}", None), ("1,23", None), ("1_000", None), ("1e5", None), ("six", None),
    ("6 apples", None), ("3 / 4", None), ("", None), ("-", None), (math.inf, None), (math.nan, None), (True, None),
])
def test_parse_number(answer: str | float, expected: Fraction | None) -> None:
    assert parse_number(answer) == expected


def test_numbers_equal() -> None:
    assert numbers_equal("0.5", r"\frac{1}{2}")
    assert numbers_equal("1,234", 1234)
    assert numbers_equal("0.333333", "1/3")  # within 1e-6
    assert not numbers_equal("0.33", "1/3")
    assert not numbers_equal("1234567", "1234568")  # the tolerance is absolute, not relative
    assert numbers_equal("0.33", "1/3", tolerance=0.01)
    assert not numbers_equal("six", "6")
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0, got -1"):
        numbers_equal("1", "1", tolerance=-1)


# ---------------------------------------------------------------- reward functions


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_completion_text() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text(chat("hello")) == "hello"
    tool_turns = [{"role": "assistant", "content": "let me add"}, {"role": "tool", "content": "8"},
                  {"role": "assistant", "content": "It is 8."}]
    assert completion_text(tool_turns) == "It is 8."
    with pytest.raises(ValueError, match="ending in an assistant message"):
        completion_text([{"role": "user", "content": "hi"}])


COMPLETIONS = ["The final answer to this arithmetic problem is 6.", r"We get \boxed{\frac{1}{2}} in the end, not 7",
               "I think 1,234 is right", "No idea.", r"\boxed{x + 1} and 5"]


def test_numeric_reward_on_strings_and_chat() -> None:
    reward = numeric_reward()
    answers = ["6", "0.5", 1234, "5", "5"]
    expected = [1.0, 1.0, 1.0, 0.0, 0.0]  # no number; the boxed answer wins over the last number
    assert reward(["q"] * 5, COMPLETIONS, answer=answers) == expected
    assert reward(["q"] * 5, [chat(text) for text in COMPLETIONS], answer=answers) == expected
    assert reward(["q"] * 2, ["6", "6"], answer=["7", "6.0000001"]) == [0.0, 1.0]
    assert reward.__name__ == "numeric_reward"
    assert reward.required_columns == ("answer",)


def test_numeric_reward_column_and_unparseable_reference() -> None:
    reward = numeric_reward(column="solution", tolerance=0.1)
    assert reward(["q"] * 3, ["6", "6.05", "6"], solution=["6", "6", "six"]) == [1.0, 1.0, None]
    assert reward(["q"], ["6"], solution=[None]) == [None]
    with pytest.raises(ValueError, match=r"numeric_reward reads column 'solution', which is missing; "
                                         r"columns given: answer, trainer_state"):
        reward(["q"], ["6"], answer=["6"], trainer_state=None)
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        numeric_reward(tolerance=math.nan)


def test_math_verify_reward_scores_with_math_verify() -> None:
    """The real package (the rl extra installs it; tests/test_extras.py covers its absence)."""
    reward = math_verify_reward()
    assert reward(["q"] * 2, [chat(r"So \boxed{\frac{1}{2}}"), chat(r"So \boxed{3}")],
                  answer=["1/2", "4"]) == [1.0, 0.0]


def test_math_verify_reward_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring around math-verify, with a stand-in module: gold parsed first, None when it does not parse,
    math-verify's signal-based timeouts only on the main thread."""
    calls: list[tuple[str, Any]] = []

    def parse(text: str, parsing_timeout: float | None) -> list[Fraction]:
        calls.append(("parse", parsing_timeout))
        number = parse_number(boxed_answer(text) or text)
        return [] if number is None else [number]

    def verify(gold: list[Fraction], answer: list[Fraction], timeout_seconds: float | None) -> bool:
        calls.append(("verify", timeout_seconds))
        return bool(answer) and gold[0] == answer[0]

    monkeypatch.setitem(sys.modules, "math_verify", types.SimpleNamespace(parse=parse, verify=verify))
    reward = math_verify_reward(column="solution")
    assert reward(["q"] * 3, [r"\boxed{4}", "5", "6"], solution=["4", "4", "not math"]) == [1.0, 0.0, None]
    assert {timeout for _, timeout in calls} == {10, 5}
    calls.clear()
    scores = score_completions([reward], ["q"], [r"\boxed{4}"], {"solution": ["4"]})
    assert scores.rewards.tolist() == [1.0]
    assert {timeout for _, timeout in calls} == {None}


def test_reasoning_gym_reward_with_the_real_checker() -> None:
    dataset = reasoning_gym.create_dataset("chain_sum", size=4, seed=7, min_terms=2, max_terms=2,
                                           min_digits=1, max_digits=1)
    entries = list(dataset)
    columns = {"answer": [entry["answer"] for entry in entries], "metadata": [entry["metadata"] for entry in entries]}
    right = [f"The final answer to this arithmetic problem is {entry['answer']}." for entry in entries]
    reward = reasoning_gym_reward(dataset)
    assert reward(["q"] * 4, right, **columns) == [1.0] * 4
    wrong = [chat(f"It is {int(entry['answer']) + 1}.") for entry in entries[:3]] + ["no number"]
    assert reward(["q"] * 4, wrong, **columns) == [0.0] * 4
    assert reward.required_columns == ("answer",)


def test_reasoning_gym_reward_builds_entries_from_columns() -> None:
    seen: list[tuple[str | None, dict[str, Any]]] = []

    class Checker:
        def score_answer(self, answer: str | None, entry: dict[str, Any]) -> float:
            seen.append((answer, entry))
            return 0.5

    reward = reasoning_gym_reward(Checker(), extract=boxed_answer)
    out = reward(["q"] * 2, [r"\boxed{1}", "2"], answer=["1", "2"], metadata=[{"k": 1}, {"k": 2}],
                 trainer_state=object(), log_metric=print)
    assert out == [0.5, 0.5]
    assert seen == [("1", {"answer": "1", "metadata": {"k": 1}}), (None, {"answer": "2", "metadata": {"k": 2}})]
    with pytest.raises(ValueError, match="score_answer"):
        reasoning_gym_reward(object())  # type: ignore[arg-type]


# ---------------------------------------------------------------- score_completions


def constant(value: float | None, name: str) -> Any:
    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        return [value] * len(completions)
    reward.__name__ = name
    return reward


def raises(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    raise RuntimeError("grader crashed")


def test_score_completions_totals_and_weights() -> None:
    def per_row(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        return [None, 0.25, math.nan, 1]

    scores = score_completions([numeric_reward(), per_row], ["q"] * 4, ["6", "7", r"\boxed{8}", "nothing"],
                               {"answer": ["6", "6", "8", None]}, weights=[2.0, -1.0])
    assert isinstance(scores, Scores)
    assert scores.names == ("numeric_reward", "per_row")
    nan = math.nan
    torch.testing.assert_close(scores.per_function, torch.tensor([[1.0, nan], [0.0, 0.25], [1.0, nan], [nan, 1.0]]),
                               equal_nan=True)
    torch.testing.assert_close(scores.rewards, torch.tensor([2.0, -0.25, 2.0, -1.0]))
    assert scores.rewards.dtype == torch.float32
    assert scores.unscored == {"numeric_reward": 1, "per_row": 2}
    assert scores.failures == scores.timeouts == {"numeric_reward": 0, "per_row": 0}


def test_score_completions_all_none_row_is_nan_and_unscored_by_advantages() -> None:
    sometimes = constant(None, "sometimes")
    scores = score_completions({"numeric": numeric_reward(), "sometimes": sometimes}, ["q"] * 3, ["6", "6", "5"],
                               {"answer": ["6", None, "6"]})
    assert scores.names == ("numeric", "sometimes")
    assert scores.rewards[0].item() == 1.0 and math.isnan(scores.rewards[1].item()) and scores.rewards[2].item() == 0.0
    advantages = group_advantages(scores.rewards, [0, 0, 0])
    assert advantages.unscored == 1
    assert advantages.values[1].item() == 0.0


def test_a_raising_reward_function_is_nan_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="leantrain.rl"):
        scores = score_completions([raises, constant(0.0, "zero")], ["q", "q"], ["a", "b"])
    assert scores.failures == {"raises": 1, "zero": 0}
    assert scores.timeouts == {"raises": 0, "zero": 0}
    assert torch.isnan(scores.per_function[:, 0]).all()
    assert scores.rewards.tolist() == [0.0, 0.0]  # the failed function adds nothing; the other scored 0
    scores = score_completions([raises], ["q", "q"], ["a", "b"])
    assert torch.isnan(scores.rewards).all()  # never silently 0
    record = next(r for r in caplog.records if r.name == "leantrain.rl")
    assert "'raises' raised RuntimeError: grader crashed" in record.getMessage()
    assert record.exc_info is not None


def hanging(release: threading.Event) -> Any:
    def hangs(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        release.wait(10)
        return [1.0] * len(completions)
    return hangs


def check_timeout(scores: Scores) -> None:
    assert scores.timeouts == {"hangs": 1, "one": 0}
    assert scores.failures == {"hangs": 0, "one": 0}
    assert torch.isnan(scores.per_function[:, 0]).all()
    assert scores.rewards.tolist() == [1.0, 1.0]


def test_a_hanging_reward_function_times_out_on_the_main_thread(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    try:
        with caplog.at_level(logging.WARNING, logger="leantrain.rl"):
            scores = score_completions([hanging(release), constant(1.0, "one")], ["q", "q"], ["a", "b"], timeout=0.05)
    finally:
        release.set()
    check_timeout(scores)
    assert any("'hangs' did not finish within 0.05 s" in r.getMessage() for r in caplog.records)


def test_a_hanging_reward_function_times_out_off_the_main_thread() -> None:
    release = threading.Event()
    results: dict[str, Any] = {}

    def score() -> None:
        try:
            results["scores"] = score_completions([hanging(release), constant(1.0, "one")], ["q", "q"], ["a", "b"],
                                                  timeout=0.05)
        except BaseException as error:
            results["error"] = error

    worker = threading.Thread(target=score)
    try:
        worker.start()
        worker.join(5)
    finally:
        release.set()
    assert not worker.is_alive()
    assert "error" not in results, results.get("error")
    check_timeout(results["scores"])


def test_a_raising_reward_function_off_the_main_thread() -> None:
    results: dict[str, Scores] = {}
    worker = threading.Thread(target=lambda: results.update(scores=score_completions([raises], ["q"], ["a"])))
    worker.start()
    worker.join(5)
    assert results["scores"].failures == {"raises": 1}
    assert torch.isnan(results["scores"].rewards).all()


@pytest.mark.parametrize(("output", "message"), [
    ([1.0], r"reward function 'bad' returned 1 rewards for 2 completions; it must return one per completion"),
    (None, r"reward function 'bad' must return a list of rewards \(numbers or None\), got NoneType"),
    (["1", 0.0], r"reward function 'bad' returned '1' for completion 0; a reward is a number"),
    ([0.0, math.inf], r"reward function 'bad' returned inf for completion 1; rewards must be finite"),
])
def test_bad_reward_output_is_an_error_naming_the_function(output: Any, message: str) -> None:
    def bad(prompts: list[Any], completions: list[Any], **columns: Any) -> Any:
        return output

    with pytest.raises(ValueError, match=message):
        score_completions([bad], ["q", "q"], ["a", "b"])


def test_bad_input_messages() -> None:
    one = constant(1.0, "one")
    with pytest.raises(ValueError, match="no completions to score"):
        score_completions([one], [], [])
    with pytest.raises(ValueError, match="got 1 prompts for 2 completions"):
        score_completions([one], ["q"], ["a", "b"])
    with pytest.raises(ValueError, match=r"reward function 'numeric_reward' reads column 'answer', which is missing; "
                                         r"columns given: solution"):
        score_completions([numeric_reward()], ["q"], ["a"], {"solution": ["6"]})
    with pytest.raises(ValueError, match="columns given: none"):
        score_completions([numeric_reward()], ["q"], ["a"])
    with pytest.raises(ValueError, match=r"column 'answer' must hold one value per completion: 2 expected, got 1 "):
        score_completions([one], ["q", "q"], ["a", "b"], {"answer": ["6"]})
    with pytest.raises(ValueError, match=r"column 'answer' must hold one value per completion: 1 expected, got a str"):
        score_completions([one], ["q"], ["a"], {"answer": "6"})
    with pytest.raises(ValueError, match="a column cannot be named 'prompts'"):
        score_completions([one], ["q"], ["a"], {"prompts": ["q"]})
    with pytest.raises(ValueError, match="two reward functions are named 'one'"):
        score_completions([one, one], ["q"], ["a"])
    with pytest.raises(ValueError, match="reward_functions must not be empty"):
        score_completions([], ["q"], ["a"])
    with pytest.raises(ValueError, match="reward_functions must be a list or a mapping"):
        score_completions(one, ["q"], ["a"])
    with pytest.raises(ValueError, match="reward function 'x' must be callable"):
        score_completions({"x": 1.0}, ["q"], ["a"])  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"got 1 weights for 2 functions \(one, two\)"):
        score_completions([one, constant(1.0, "two")], ["q"], ["a"], weights=[1.0])
    with pytest.raises(ValueError, match="weights must be finite numbers"):
        score_completions([one], ["q"], ["a"], weights=[math.nan])
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0, got 0"):
        score_completions([one], ["q"], ["a"], timeout=0)
