"""leantrain.metrics on hand-made token lists and logits, and against brute force."""

import math
import random

import pytest
import torch

from leantrain.metrics import (
    NgramIndex,
    distinct_n,
    longest_copied_span,
    mean_entropy,
    mean_top1_probability,
    perplexity,
    repetition_rate,
    temperature_for_entropy,
    type_token_ratio,
)


def test_type_token_ratio_by_hand():
    assert type_token_ratio([1, 2, 2, 3]) == 0.75
    assert type_token_ratio([1, 1, 1, 2, 3], window=2) == 1.0  # the last two: 2, 3
    assert type_token_ratio([7, 7, 7, 7], window=96) == 0.25  # a window longer than the list takes all of it
    assert type_token_ratio(torch.tensor([4, 5, 4, 5])) == 0.5
    with pytest.raises(ValueError, match="no tokens"):
        type_token_ratio([])
    with pytest.raises(ValueError, match="window=0"):
        type_token_ratio([1, 2], window=0)


def test_distinct_n_and_repetition_by_hand():
    tokens = [1, 2, 1, 2, 1]  # bigrams 12 21 12 21; trigrams 121 212 121
    assert distinct_n(tokens, 1) == 2 / 5
    assert distinct_n(tokens, 2) == 0.5 and repetition_rate(tokens, 2) == 0.5
    assert distinct_n(tokens, 3) == 2 / 3 and repetition_rate(tokens, 3) == pytest.approx(1 / 3)
    assert repetition_rate([1, 2, 3, 4], 2) == 0.0
    with pytest.raises(ValueError, match="hold no 3-gram"):
        distinct_n([1, 2], 3)
    with pytest.raises(ValueError, match="n=0"):
        distinct_n([1, 2], 0)


def test_longest_copied_span_by_hand():
    training = [[5, 6, 7, 8, 9, 10], [20, 21, 22]]
    assert longest_copied_span([1, 6, 7, 8, 9, 2], training) == 4
    assert longest_copied_span([1, 2, 3], training) == 0
    assert longest_copied_span([7, 8, 2], training) == 2  # shorter than the index's 4-token key
    assert longest_copied_span([9, 10, 20, 21], training) == 2  # spans do not run across two sequences
    assert longest_copied_span([5, 6, 7, 8, 9, 10], training) == 6
    with pytest.raises(ValueError, match="non-empty"):
        NgramIndex([[]])


def brute_force_span(tokens, training):
    best = 0
    for i in range(len(tokens)):
        for j in range(i + 1, len(tokens) + 1):
            piece = tokens[i:j]
            if any(piece == seq[k:k + len(piece)] for seq in training for k in range(len(seq) - len(piece) + 1)):
                best = max(best, len(piece))
    return best


@pytest.mark.parametrize("key", [1, 2, 4, 6])
def test_longest_copied_span_equals_brute_force(key):
    rng = random.Random(key)
    training = [[rng.randrange(5) for _ in range(rng.randrange(1, 30))] for _ in range(6)]
    index = NgramIndex(training, key=key)
    for _ in range(40):
        tokens = [rng.randrange(5) for _ in range(rng.randrange(1, 25))]
        assert index.longest_span(tokens) == brute_force_span(tokens, training)


def test_predictive_metrics_on_uniform_and_peaked_logits():
    vocabulary = 8
    uniform = torch.zeros(2, 3, vocabulary)
    assert mean_entropy(uniform) == pytest.approx(math.log(vocabulary))
    assert mean_top1_probability(uniform) == pytest.approx(1 / vocabulary)
    assert perplexity(uniform, torch.zeros(2, 3, dtype=torch.long)) == pytest.approx(vocabulary)
    peaked = torch.full((1, 2, vocabulary), -1e4)
    peaked[..., 3] = 0.0
    assert mean_entropy(peaked) == pytest.approx(0.0, abs=1e-6)
    assert mean_top1_probability(peaked) == pytest.approx(1.0)
    mixed = torch.cat([uniform[:1, :2], peaked])  # (2, 2, V): the mask keeps only the uniform row
    mask = torch.tensor([[True, True], [False, False]])
    assert mean_entropy(mixed, mask) == pytest.approx(math.log(vocabulary))


def test_perplexity_is_exp_of_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 5, 11, generator=generator), torch.randint(11, (3, 5), generator=generator)
    expected = math.exp(torch.nn.functional.cross_entropy(logits.view(-1, 11), targets.view(-1)).item())
    assert perplexity(logits, targets) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        perplexity(logits, targets[:, :4])


def test_temperature_for_entropy_hits_the_target():
    logits = 3 * torch.randn(4, 6, 50, generator=torch.Generator().manual_seed(1))
    for target in (0.5, 2.0, 3.5):
        temperature = temperature_for_entropy(logits, target)
        assert mean_entropy(logits / temperature) == pytest.approx(target, abs=1e-6)
    assert temperature_for_entropy(logits, mean_entropy(logits)) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="log V"):
        temperature_for_entropy(logits, math.log(50))
