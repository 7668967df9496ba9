"""The memory planner (plan/planner.py): its choice, measured in a fresh process, fits the budget it was
given; a loose budget gets the fastest step (nothing on), a tight one the parts that save most, an impossible
one a clear error; and `leantrain memory` with --memory-budget and peak.total_bytes."""

import json

import pytest
import torch

from leantrain.cli import main
from leantrain.config import MemoryOptions, OptimConfig
from leantrain.memory.peak import cpu_peak_in_subprocess
from leantrain.models.presets import build_model
from leantrain.plan import planner
from leantrain.plan.planner import fp32_product_bytes, plan_memory, weight_bytes
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


def test_a_tier_whose_weights_alone_exceed_the_budget_is_not_measured(monkeypatch):
    """With the budget under the fp32 weights (less the margin), no fp32 combination is measured: the forwards
    the planner runs are all of bf16 copies, and the plan says what it skipped. A deep model with a small
    vocabulary, so that the weights dominate (as at 1.7B) and bf16 weights with Adafactor's states fit."""
    import transformers

    config = transformers.LlamaConfig(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                                      num_key_value_heads=4, intermediate_size=1376, vocab_size=1000)
    torch.manual_seed(0)
    deep = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    measured_dtypes = []
    measure = planner._activation_bytes

    def recording(network, batch, parts):
        measured_dtypes.append(next(network.parameters()).dtype)
        return measure(network, batch, parts)

    monkeypatch.setattr(planner, "_activation_bytes", recording)
    fp32 = weight_bytes(deep, "fp32")
    assert fp32 == 4 * sum(p.numel() for p in deep.parameters()) == 2 * weight_bytes(deep, "bf16")
    plan = plan_memory(deep, 1, 16, budget=int(fp32 * 1.1), optim=OptimConfig("adafactor"))  # 0.99x fp32 free
    assert plan.optim.weights == "bf16" and set(measured_dtypes) == {torch.bfloat16}
    assert f"skipped  every combination with fp32 weights: the weights alone take {fp32 / MIB:,.0f} MiB" in \
        plan.explain()
    with pytest.raises(ValueError, match=r"no combination fits 10 MiB .* the weights alone take at least"):
        plan_memory(deep, 1, 16, budget=10 * MIB, optim=OptimConfig("adafactor"))


def test_fp32_products_of_16_bit_layers_are_counted_where_the_device_has_no_bf16_units(monkeypatch):
    """4·T·(in + out) + 6·in·out bytes for the largest 16-bit linear layer (the head left out when the fused loss
    computes it); nothing on a device with bf16 units, or for fp32 weights."""
    import transformers

    config = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=160, vocab_size=1000)
    bf16 = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    monkeypatch.setattr(planner, "bf16_matmul_is_native", lambda device_type: device_type != "cpu")
    mlp = 4 * 32 * (64 + 160) + 6 * 64 * 160
    assert fp32_product_bytes(bf16, 32, "cpu", fused_head=True) == mlp
    assert fp32_product_bytes(bf16, 32, "cpu", fused_head=False) == 4 * 32 * (64 + 1000) + 6 * 64 * 1000  # the head
    assert fp32_product_bytes(bf16, 32, "cuda", fused_head=True) == 0
    assert fp32_product_bytes(bf16.float(), 32, "cpu", fused_head=True) == 0


def test_an_impossible_budget_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"no combination fits 100 MiB .* the smallest estimate is"):
        plan_memory(model, *SHAPE, budget=100 * MIB)
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
