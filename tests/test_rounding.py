"""Stochastic rounding to bf16: unbiased (a statistical test with a tolerance derived from the rounding's own
variance), equal to torchao's rule bit for bit on the same draws, reproducible from its generator; and why it
exists: round-to-nearest bf16 weights stall when each update is under half a bf16 gap."""

import math

import pytest
import torch

from leantrain.optim.rounding import CHUNK, stochastic_round_, uniform_16bit


def bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 values just below and just above each (positive) fp32 value, as fp32."""
    low = (x.view(torch.int32) & -0x10000).view(torch.float32)
    high = ((x.view(torch.int32) & -0x10000) + 0x10000).view(torch.float32)
    return low, high


def test_the_rounding_is_unbiased_within_its_own_standard_error():
    generator = torch.Generator().manual_seed(0)
    values = torch.tensor([1.0 + 2**-9, -3.0 - 2**-10, 1e-3 * (1 + 1 / 3), 7.123456, -0.1])
    draws = 20_000
    repeated = values.repeat(draws, 1)
    rounded = stochastic_round_(torch.empty_like(repeated, dtype=torch.bfloat16), repeated, generator).float()
    low, high = bf16_neighbours(values.abs())
    p = (values.abs() - low) / (high - low)  # the probability of rounding away from zero
    standard_error = (high - low) * torch.sqrt(p * (1 - p) / draws)
    error = (rounded.mean(0) - values).abs()
    assert (error <= 5 * standard_error).all(), (error, standard_error)  # 5 sigma: 1 in 3.5 million by chance
    assert set(rounded[:, 0].unique().tolist()) == {low[0].item(), high[0].item()}  # only the two neighbours
    nearest = values.to(torch.bfloat16).float()
    assert (nearest - values).abs().max() > 10 * error.max()  # round-to-nearest is biased at this scale


def test_exact_bf16_values_and_special_values_stay_as_they_are():
    exact = torch.tensor([0.0, -0.0, 1.0, -2.5, 2.0**127, float("inf"), float("-inf")])
    out = stochastic_round_(torch.empty(len(exact), dtype=torch.bfloat16), exact, torch.Generator().manual_seed(1))
    assert torch.equal(out.float(), exact)
    assert torch.isnan(stochastic_round_(torch.empty(1, dtype=torch.bfloat16), torch.tensor([float("nan")]))).all()


def test_the_same_draws_give_torchaos_bits(monkeypatch):
    """torchao draws its integers with torch.randint; handed leantrain's draws, its rule gives leantrain's bits."""
    quant_utils = pytest.importorskip("torchao.optim.quant_utils")
    values = torch.randn(3000, generator=torch.Generator().manual_seed(2)) * 10
    draws = uniform_16bit(len(values), torch.Generator().manual_seed(3))
    monkeypatch.setattr(quant_utils.torch, "randint", lambda low, high, shape, **_: draws.view(shape))
    theirs = quant_utils._fp32_to_bf16_sr(values)
    ours = stochastic_round_(torch.empty_like(values, dtype=torch.bfloat16), values, torch.Generator().manual_seed(3))
    assert torch.equal(ours.view(torch.int16), theirs.view(torch.int16))


def test_chunks_draw_the_stream_in_order_and_a_seed_reproduces_the_bits():
    values = torch.rand(CHUNK + 1000, generator=torch.Generator().manual_seed(4))
    whole = stochastic_round_(torch.empty_like(values, dtype=torch.bfloat16), values, torch.Generator().manual_seed(5))
    again = stochastic_round_(torch.empty_like(values, dtype=torch.bfloat16), values, torch.Generator().manual_seed(5))
    assert torch.equal(whole.view(torch.int16), again.view(torch.int16))
    draws = torch.cat([uniform_16bit(CHUNK, generator := torch.Generator().manual_seed(5)),  # chunk by chunk
                       uniform_16bit(1000, generator)])
    bits = values.view(torch.int32)
    expected = torch.where(draws < (bits & 0xFFFF), (bits & -0x10000) + 0x10000, bits & -0x10000)
    assert torch.equal(whole.float(), expected.view(torch.float32))


def test_16_bit_draws_are_uniform():
    """Each of the 2^16 integers equally likely: a chi-square test over 256 cells of 256 values (255 degrees of
    freedom: mean 255, sd √510 ≈ 22.6; the bound is 6 sd above the mean) and over the low 8 bits alone."""
    draws = uniform_16bit(3 * 2**20 + 1, torch.Generator().manual_seed(6))
    assert draws.min() >= 0 and draws.max() < 2**16 and len(draws) == 3 * 2**20 + 1
    for cells in (draws // 256, draws % 256):
        counts = torch.bincount(cells, minlength=256).double()
        expected = len(draws) / 256
        chi_square = ((counts - expected) ** 2 / expected).sum().item()
        assert chi_square < 255 + 6 * math.sqrt(2 * 255)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="writes an fp32 tensor into a bf16 one of its shape"):
        stochastic_round_(torch.empty(3, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="writes an fp32 tensor into a bf16 one of its shape"):
        stochastic_round_(torch.empty(4, dtype=torch.bfloat16), torch.zeros(3))


def test_round_to_nearest_stalls_where_stochastic_rounding_keeps_moving():
    """1,000 updates of -1e-4 from 1.0 (bf16 gap just below 1: 2^-8 ≈ 0.0039): nearest never moves, the
    stochastic weights end at the exact 0.9 on average. Each weight is 0.9 plus 1,000 independent rounding
    errors of mean 0 and variance at most gap²/4, so the mean of 64 weights has a standard deviation of at
    most gap·√(1000/4)/√64."""
    generator = torch.Generator().manual_seed(6)
    nearest = torch.ones(64, dtype=torch.bfloat16)
    stochastic = torch.ones(64, dtype=torch.bfloat16)
    for _ in range(1000):
        nearest.copy_(nearest.float() - 1e-4)
        stochastic_round_(stochastic, stochastic.float() - 1e-4, generator)
    assert torch.equal(nearest, torch.ones(64, dtype=torch.bfloat16))
    sigma = 2**-8 * math.sqrt(1000 / 4) / math.sqrt(64)
    assert abs(float(stochastic.float().mean()) - 0.9) <= 5 * sigma
