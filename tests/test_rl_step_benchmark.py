"""benchmarks/rl_step.py on a tiny random Llama: its generation timing, its batch, one RL step of every
configuration, micro-batches and head chunks leaving the loss as it is, and the peak and step-time subprocesses."""

import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the peak subprocess inherits it

import rl_step

PROMPTS = [[5, 9, 12, 7], [7, 3, 30, 22, 8, 14, 2], [11, 4], [19, 25, 6, 33, 17]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model folder, saved batch path, batch) of 4 prompts x 2 rollouts of up to 6 tokens."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 bos_token_id=2, eos_token_id=1)).save_pretrained(folder)
    model = rl_step.load_policy(folder)
    speeds, tokens = rl_step.generation_speed(model, PROMPTS, 2, 6, repeats=1, seed=0, batch_size=8)
    assert set(speeds) == set(tokens) == set(rl_step.generators()) >= {"model.generate, fp32", "rollout engine, fp32"}
    assert all(speed > 0 for speed in speeds.values()) and all(count > 0 for count in tokens.values())
    rollouts = rl_step.seeded_rollouts(model, PROMPTS, 2, 6, seed=0)
    assert tokens["rollout engine, fp32"] == int(rollouts.completion_lengths.sum()) and len(rollouts) == 8
    batch = rl_step.rl_batch(rollouts, seed=0)
    assert batch["advantages"].abs().sum() > 0
    path = folder / "batch.pt"
    torch.save(batch, path)
    return str(folder), str(path), batch


def test_a_generators_peak_is_measured_in_a_subprocess(setup):
    folder, _, _ = setup
    peak = rl_step.in_subprocess(rl_step._generation_peak, folder, "rollout engine, bf16", PROMPTS, 2, 6, 0, 8)
    assert 0 < peak < 256 * rl_step.MIB  # a tiny model's bf16 copy and KV cache, above the loaded model


@pytest.mark.parametrize("name", list(rl_step.CONFIGS))
def test_every_configuration_takes_a_step_to_a_finite_loss(setup, name):
    folder, path, _ = setup
    step, batch, optimizer = rl_step.RLStepSpec(folder, path, rl_step.CONFIGS[name])()
    before = [p.detach().clone() for p in optimizer.param_groups[0]["params"]]
    assert math.isfinite(rl_step.rl_training_step(step, batch, optimizer))
    after = optimizer.param_groups[0]["params"]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(p.grad is None for p in after)  # zero_grad ran
    assert rl_step.timed_rl_step(step, batch, optimizer) > 0


def test_micro_batches_and_head_chunks_leave_the_whole_batch_loss(setup):
    folder, path, _ = setup
    whole = rl_step.RLStepSpec(folder, path)()
    micro = rl_step.RLStepSpec(folder, path, micro_tokens=30, chunk_rows=5)()
    assert len(rl_step.local_micro_batches(micro[1], 0, 1, 1, 30)) >= 3
    assert rl_step.rl_training_step(*micro) == pytest.approx(rl_step.rl_training_step(*whole), abs=1e-6)


def test_peak_memory_of_a_configuration_in_a_subprocess(setup):
    folder, path, _ = setup
    specs = {"lean + LoRA": rl_step.RLStepSpec(folder, path, rl_step.CONFIGS["WTA-CRS@0.3 + lean + LoRA r16"])}
    rows = rl_step.memory_rows(specs)
    assert rows["lean + LoRA"]["trainable"] > 0 and rows["lean + LoRA"]["total"] > rows["lean + LoRA"]["weights"]
    assert "lean + LoRA" in rl_step.memory_table(rows)


def test_step_times_of_a_configuration_in_a_subprocess(setup):
    folder, path, _ = setup
    table = rl_step.time_table({"stock": rl_step.RLStepSpec(folder, path, micro_tokens=40)}, repeats=2)
    assert "| stock |" in table and "1.00x" in table
