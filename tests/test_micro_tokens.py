"""Micro-batches sized by tokens (``EngineConfig.micro_tokens``): every micro-batch of every process fits, their
number is the same on every process, the weighted micro-batch losses give the whole batch's gradient, and the
RL step of a DARS-sized batch (hundreds of rows) trains in micro-batches that fit, at a fraction of the peak."""

import sys
from pathlib import Path

import pytest
import torch
from test_rl_rollouts import PROMPTS, tiny_model
from transformers import LlamaConfig, LlamaForCausalLM

from leantrain.data.micro_batches import local_micro_batches, micro_batch_count
from leantrain.rl.rollouts import generate_rollouts
from leantrain.rl.training_loss import LossSettings, RLLoss, longest_first, rollout_batch

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the peak subprocess inherits it

import rl_step


def ragged_batch(rows: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    mask = (torch.arange(width) < lengths[:, None]).long()
    return {"input_ids": torch.randint(0, 40, (rows, width), generator=generator) * mask, "attention_mask": mask,
            "weights": torch.rand(rows, generator=generator)}


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("micro_tokens", [None, 1, 50, 200, 10_000])
def test_every_micro_batch_fits_and_every_process_makes_as_many(world_size, micro_tokens):
    batch = ragged_batch(37, 24)
    fewest = min(len(share) for share in batch["weights"].tensor_split(world_size))
    counts = set()
    rows = 0
    for rank in range(world_size):
        micros = local_micro_batches(batch, rank, world_size, 2, micro_tokens)
        counts.add(len(micros))
        for micro, weight in micros:
            size = len(micro["input_ids"])
            rows += size
            assert weight == pytest.approx(size * world_size / 37)
            if micro_tokens is not None and len(micros) < fewest:
                assert size * int(micro["attention_mask"].sum(1).max()) <= micro_tokens
    assert rows == 37 and len(counts) == 1
    count = counts.pop()
    assert count == micro_batch_count(batch, world_size, 2, micro_tokens)
    assert count == (2 if micro_tokens in (None, 10_000) else count)
    if micro_tokens == 1:  # no two rows fit together: a row per micro-batch of the smallest share
        assert count == fewest


def test_fewer_tokens_make_more_micro_batches():
    batch = ragged_batch(64, 32)
    counts = [micro_batch_count(batch, 1, 1, budget) for budget in (4096, 1024, 256, 64)]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] > counts[1] > 1


def test_a_dars_sized_rl_step_in_token_micro_batches_gives_the_whole_batchs_gradient():
    """300 rows (DARS's second round gives hard prompts many more): the loss weighted over micro-batches of at
    most 64 tokens has the gradient of the loss over the whole batch at once."""
    model = tiny_model().train()
    torch.manual_seed(0)
    rollouts = generate_rollouts(model, PROMPTS, [120, 30, 90, 60], max_new_tokens=8)
    advantages = torch.randn(len(rollouts), generator=torch.Generator().manual_seed(1))
    batch = rollout_batch(*longest_first(rollouts.training_inputs(), advantages))
    loss = RLLoss(LossSettings())

    def gradient(micro_tokens):
        model.zero_grad()
        micros = local_micro_batches(batch, 0, 1, 1, micro_tokens)
        for micro, weight in micros:
            if micro_tokens is not None:
                assert len(micro["input_ids"]) == 1 or len(micro["input_ids"]) * int(
                    micro["attention_mask"].sum(1).max()) <= micro_tokens
            (loss(model, micro) * weight).backward()
        return len(micros), torch.cat([p.grad.flatten() for p in model.parameters()])

    whole_count, whole = gradient(None)
    micro_count, micro = gradient(64)
    assert whole_count == 1 and micro_count >= 300 * 9 // 64
    torch.testing.assert_close(micro, whole, rtol=1e-4, atol=1e-6)


def test_a_dars_sized_step_in_token_micro_batches_peaks_at_a_fraction_of_the_whole_batch(tmp_path):
    """300 rows of 28-32 tokens (a DARS step's worth) on a small Llama: the first step's peak RSS above the
    pre-step RSS, each in a fresh subprocess (memory/peak.py), in micro-batches of 512 tokens against the whole
    batch at once. The whole batch holds every token's activations and 64 MiB head chunks; a micro-batch 1/18
    of them, so the bound of 1/4 leaves room for the allocator and the fixed costs of a step."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4000, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=2, eos_token_id=1)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    rollouts = generate_rollouts(model, [[5, 9, 12, 7], [7, 3, 30, 22, 8, 14, 2], [11, 4, 9], [19, 25, 6, 33]],
                                 [120, 30, 90, 60], max_new_tokens=24)
    advantages = torch.randn(len(rollouts), generator=torch.Generator().manual_seed(1))
    torch.save(rollout_batch(*longest_first(rollouts.training_inputs(), advantages)), tmp_path / "batch.pt")
    specs = {name: rl_step.RLStepSpec(str(tmp_path), str(tmp_path / "batch.pt"), micro_tokens=tokens)
             for name, tokens in (("whole", None), ("micro", 512))}
    peaks = {name: row["step"] for name, row in rl_step.memory_rows(specs).items()}
    assert peaks["micro"] < peaks["whole"] / 4, peaks
