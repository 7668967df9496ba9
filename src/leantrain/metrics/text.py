"""Diversity and memorisation of a token sequence (a generated continuation).

Type-token ratio as the Hyperfitting code computes it (Carlsson et al., ICLR 2025, ``validation.py``:
unique / total token ids over the last 96 generated tokens); distinct-n (Li et al., NAACL 2016) and
its complement, the n-gram repetition rate; and the longest span a continuation copies verbatim
from the training sequences (the check behind the paper's citation blocker).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from leantrain.validation import is_positive_int

Tokens = Sequence[int]


def _ids(tokens: Iterable[int]) -> list[int]:
    return [int(t) for t in tokens]


def type_token_ratio(tokens: Tokens, window: int | None = None) -> float:
    """Distinct ids / ids over the last ``window`` tokens (all of them when None)."""
    ids = _ids(tokens)
    if window is not None:
        if not is_positive_int(window):
            raise ValueError(f"window={window!r} must be None or an integer >= 1")
        ids = ids[-window:]
    if not ids:
        raise ValueError("type_token_ratio of no tokens is undefined")
    return len(set(ids)) / len(ids)


def _ngrams(ids: list[int], n: int) -> list[tuple[int, ...]]:
    if not is_positive_int(n):
        raise ValueError(f"n={n!r} must be an integer >= 1")
    if len(ids) < n:
        raise ValueError(f"{len(ids)} tokens hold no {n}-gram")
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(tokens: Tokens, n: int) -> float:
    """Distinct n-grams / n-grams of ``tokens``."""
    grams = _ngrams(_ids(tokens), n)
    return len(set(grams)) / len(grams)


def repetition_rate(tokens: Tokens, n: int) -> float:
    """Share of n-gram positions whose n-gram already occurred earlier: ``1 - distinct_n``."""
    return 1.0 - distinct_n(tokens, n)


class NgramIndex:
    """Every ``key``-gram of the training sequences with where it occurs, and their shorter n-grams,
    so that ``longest_copied_span`` extends only from places that already match ``key`` tokens."""

    def __init__(self, sequences: Iterable[Tokens], key: int = 4) -> None:
        if not is_positive_int(key):
            raise ValueError(f"key={key!r} must be an integer >= 1")
        self.sequences = [_ids(s) for s in sequences]
        if not any(self.sequences):
            raise ValueError("NgramIndex needs at least one non-empty training sequence")
        self.key = key
        self.short: list[set[tuple[int, ...]]] = [set() for _ in range(key)]  # [n] holds the n-grams, n < key
        self.places: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for s, ids in enumerate(self.sequences):
            for n in range(1, key):
                self.short[n].update(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))
            for i in range(len(ids) - key + 1):
                self.places.setdefault(tuple(ids[i:i + key]), []).append((s, i))

    def longest_span(self, tokens: Tokens) -> int:
        ids = _ids(tokens)
        best = 0
        for n in range(1, min(self.key, len(ids) + 1)):
            if any(tuple(ids[i:i + n]) in self.short[n] for i in range(len(ids) - n + 1)):
                best = n
            else:
                return best
        k = self.key
        for i in range(len(ids) - k + 1):
            for s, p in self.places.get(tuple(ids[i:i + k]), ()):
                source, length = self.sequences[s], k
                while i + length < len(ids) and p + length < len(source) and ids[i + length] == source[p + length]:
                    length += 1
                best = max(best, length)
        return best


def longest_copied_span(tokens: Tokens, training: Iterable[Tokens] | NgramIndex) -> int:
    """Length of the longest run of ``tokens`` that appears verbatim inside one training sequence.
    Pass an ``NgramIndex`` of the training sequences to check many continuations against them."""
    index = training if isinstance(training, NgramIndex) else NgramIndex(training)
    return index.longest_span(tokens)
