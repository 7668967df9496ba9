"""Adafactor without a first moment (the state floor): HF transformers' Adafactor step for step in its
non-relative form, states of (m + n) values a matrix, row chunks that change nothing, bf16 weights, and a
resume that continues bit for bit."""

import copy

import pytest
import torch
from torch import nn

from leantrain.memory.state_bytes import optimizer_state_bytes
from leantrain.optim.adafactor import Adafactor
from leantrain.optim.rounding import CHUNK


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.LayerNorm(40), nn.Linear(40, 8))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int,
          generator: torch.Generator | None = None) -> list[float]:
    generator = generator or torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 24, generator=generator).to(next(model.parameters()).dtype)
        loss = model(x).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def test_it_is_hf_adafactor_in_its_non_relative_form():
    transformers = pytest.importorskip("transformers.optimization")
    ours, theirs = tiny(), tiny()
    train(ours, Adafactor(ours.parameters(), lr=1e-2), steps=6)
    reference = transformers.Adafactor(theirs.parameters(), lr=1e-2, scale_parameter=False, relative_step=False,
                                       warmup_init=False, beta1=None, clip_threshold=1.0, decay_rate=-0.8)
    train(theirs, reference, steps=6)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_a_matrix_keeps_its_row_and_column_means_only():
    model = nn.Linear(1024, 512, bias=False)
    optimizer = Adafactor(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1024)).sum().backward()
    optimizer.step()
    assert optimizer_state_bytes(optimizer) == (1024 + 512) * 4  # < 0.01 bytes a weight; Adam keeps 8


def test_row_chunks_give_the_one_chunk_update(monkeypatch):
    whole, chunked = tiny(), tiny()
    train(whole, Adafactor(whole.parameters(), lr=1e-2, weight_decay=0.1), steps=3)
    monkeypatch.setattr("leantrain.optim.adafactor.CHUNK", 24 * 5)  # 5 rows of the first matrix at a time
    train(chunked, Adafactor(chunked.parameters(), lr=1e-2, weight_decay=0.1), steps=3)
    for a, b in zip(whole.parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)  # column sums added in another order
    assert CHUNK == 2**20


def test_bf16_weights_follow_the_fp32_run_and_resume_bit_for_bit():
    fp32 = tiny()
    train(fp32, Adafactor(fp32.parameters(), lr=1e-2), steps=20)
    straight = tiny().to(torch.bfloat16)
    straight_optimizer = Adafactor(straight.parameters(), lr=1e-2)
    straight_optimizer.rounding_seed = 7
    train(straight, straight_optimizer, steps=20)
    assert all(state["row"].dtype == torch.float32 for state in straight_optimizer.state.values() if "row" in state)
    for a, b in zip(straight.parameters(), fp32.parameters(), strict=True):
        assert a.dtype == torch.bfloat16 and (a.float() - b).abs().max() < 0.05  # a few bf16 gaps

    split = tiny().to(torch.bfloat16)
    data = torch.Generator().manual_seed(0)
    optimizer = Adafactor(split.parameters(), lr=1e-2)
    optimizer.rounding_seed = 7
    train(split, optimizer, steps=10, generator=data)
    saved = copy.deepcopy(optimizer.state_dict())
    resumed = copy.deepcopy(split)
    resumed_optimizer = Adafactor(resumed.parameters(), lr=1e-2)
    resumed_optimizer.rounding_seed = 7  # the draws follow (seed, place, step): nothing else to restore
    resumed_optimizer.load_state_dict(saved)
    train(resumed, resumed_optimizer, steps=10, generator=data)
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)
