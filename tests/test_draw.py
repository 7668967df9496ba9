"""The inverse-CDF draw (generation/draw.py): its draws follow the probabilities (a chi-square test with a
bound derived from the statistic's spread), entries of probability 0 are never drawn even at the uniform's
extremes, and it spans blocks and a vocabulary that is not a multiple of the block."""

import math

import pytest
import torch

from leantrain.generation import draw
from leantrain.generation.draw import BELOW_ONE, BLOCK, inverse_cdf_draw


def uneven_probabilities(vocab: int, seed: int) -> torch.Tensor:
    """Unnormalised masses over ``vocab`` entries: a few heavy ones, many light ones, and zeros (a whole
    block, single entries, the first and the last entry)."""
    generator = torch.Generator().manual_seed(seed)
    masses = torch.rand(vocab, generator=generator) ** 4
    masses[torch.randperm(vocab, generator=generator)[:5]] += 20.0
    masses[BLOCK:2 * BLOCK] = 0.0
    masses[::7] = 0.0
    masses[0] = masses[-1] = 0.0
    return masses


@pytest.mark.parametrize("vocab", [BLOCK - 3, 3 * BLOCK + 45])
def test_draws_follow_the_probabilities(vocab):
    torch.manual_seed(0)
    masses = uneven_probabilities(vocab, seed=vocab)
    rows, calls = 2_000, 50
    counts = torch.zeros(vocab)
    for _ in range(calls):
        counts += torch.bincount(inverse_cdf_draw(masses.expand(rows, vocab)), minlength=vocab)
    assert counts[masses == 0].sum() == 0
    expected = masses / masses.sum() * rows * calls
    # bins with too few expected draws for the chi-square approximation are pooled into one
    enough = expected >= 5
    observed = torch.cat([counts[enough], counts[~enough & (masses > 0)].sum()[None]])
    wanted = torch.cat([expected[enough], expected[~enough & (masses > 0)].sum()[None]])
    statistic = float(((observed - wanted) ** 2 / wanted).sum())
    freedom = len(wanted) - 1
    assert statistic < freedom + 6 * math.sqrt(2 * freedom)


def test_the_uniforms_extremes_land_on_the_first_and_last_positive_entries(monkeypatch):
    masses = uneven_probabilities(3 * BLOCK + 45, seed=1)
    positive = masses.nonzero()[:, 0]
    extremes = torch.tensor([[0.0], [BELOW_ONE]], dtype=torch.float64)
    monkeypatch.setattr(draw.torch, "rand", lambda *args, **kwargs: extremes)
    drawn = inverse_cdf_draw(masses.expand(2, -1))
    assert drawn.tolist() == [positive[0].item(), positive[-1].item()]


def test_a_row_with_one_positive_entry_always_draws_it():
    masses = torch.zeros(4, 2 * BLOCK + 1)
    masses[torch.arange(4), torch.tensor([0, BLOCK - 1, BLOCK, 2 * BLOCK])] = 1e-30
    torch.manual_seed(0)
    for _ in range(20):
        assert inverse_cdf_draw(masses).tolist() == [0, BLOCK - 1, BLOCK, 2 * BLOCK]
