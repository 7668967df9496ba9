"""The memory planner (plan/planner.py): its choice, measured in a fresh process, fits the budget it was
given; a loose budget gets the fastest step (nothing on), a tight one the parts that save most, an impossible
one a clear error; and `leantrain memory` with --memory-budget and peak.total_bytes."""

import json

import pytest

from leantrain.cli import main
from leantrain.config import MemoryOptions, OptimConfig
from leantrain.memory.peak import cpu_peak_in_subprocess
from leantrain.models.presets import build_model
from leantrain.plan.planner import plan_memory
from leantrain.plan.step_spec import StepSpec

MIB = 2**20
SHAPE = (4, 128)  # llama-small: 4 layers of width 512, a 32,000-token vocabulary (the logits matter)


@pytest.fixture(scope="module")
def model():
    return build_model("llama-small")


def test_a_loose_budget_gets_the_fastest_step(model):
    plan = plan_memory(model, *SHAPE, budget=64 * 2**30)
    assert (plan.memory, plan.optim) == (MemoryOptions(), OptimConfig())
    assert plan.estimates[0].parts == (MemoryOptions(), OptimConfig())


def test_the_choice_fits_the_budget_when_measured(model):
    loosest = plan_memory(model, *SHAPE, budget=64 * 2**30)
    stock, smallest = loosest.estimates[0].total, min(e.total for e in loosest.estimates)
    budget = int((stock + smallest) / 2 / 0.9)  # between the smallest step and the stock one
    plan = plan_memory(model, *SHAPE, budget=budget)
    assert (plan.memory, plan.optim) != (MemoryOptions(), OptimConfig())
    measured = cpu_peak_in_subprocess(StepSpec("llama-small", *SHAPE, plan.optim, plan.memory))
    assert measured.total_bytes <= budget, (plan.explain(), measured.total_bytes / MIB)
    preferred = plan.estimates[:plan.estimates.index(plan.chosen)]  # fp32 before bf16, then the fastest
    assert preferred and all(not plan.fits(e) for e in preferred)  # nothing preferred was left out
    assert "chosen" in plan.explain() and "too big" in plan.explain()


def test_an_impossible_budget_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"no combination fits 10 MiB .* the smallest estimate is"):
        plan_memory(model, *SHAPE, budget=10 * MIB)
    with pytest.raises(ValueError, match="must be a positive number of bytes"):
        plan_memory(model, *SHAPE, budget=0)


def test_memory_cli_reports_the_total_and_plans(capsys):
    args = ["memory", "llama-small", "--batch-size", "2", "--seq-len", "64"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    peak = report["peak"]
    assert peak["total_bytes"] >= peak["step_bytes"] + 0.9 * report["parameter_bytes"]
    assert main([*args, "--memory-budget", "700MiB", "--checkpointing", "layers", "--state-bits", "8",
                 "--no-peak"]) == 0
    printed = capsys.readouterr().out
    assert "memory plan for a budget of 700 MiB" in printed and "chosen" in printed
    assert main([*args, "--memory-budget", "1MiB"]) == 2
    assert "no combination fits 1 MiB" in capsys.readouterr().err


def test_memory_cli_knows_the_default_causal_lm(capsys):
    assert main(["memory", "smollm2", "--batch-size", "1", "--seq-len", "8", "--no-peak", "--json",
                 "--checkpointing", "layers", "--chunked-loss", "--state-bits", "8", "--step-in-backward"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_type"] == "LlamaForCausalLM" and report["parameter_bytes"] > 500 * MIB
    assert report["memory"] == "checkpointing (layers) + chunked loss + adamw 8-bit + step in backward"
    assert report["gradient_bytes"] == 0  # every gradient was freed by its update in backward
