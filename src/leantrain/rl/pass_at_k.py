"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", §2.1, Eq. 1).

For one problem with ``n`` samples of which ``c`` are correct, the chance that at least one of ``k``
samples drawn without replacement is correct is ``1 − C(n−c, k) / C(n, k)``. The binomials overflow
for large ``n``, so it is computed in the paper's numerically stable product form (their Fig. 3)
``1 − Π_{i=n−c+1}^{n} (1 − k/i)`` (which is 1 when ``n − c < k``). Over several problems the
estimate is the mean of the per-problem values. pass@1 is the mean accuracy ``c / n`` ("Avg@n").
``mean_interval`` gives a percentile bootstrap interval over problems for such a mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Counts = int | Sequence[int] | np.ndarray


def _counts(name: str, value: Counts) -> np.ndarray:
    """``value`` as a 0-d or 1-d int64 array of whole, non-negative numbers."""
    array = np.asarray(value)
    if array.ndim > 1:
        raise ValueError(f"{name} must be an int or a 1-d sequence of ints (one per problem), "
                         f"got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be whole numbers, got {value!r}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise ValueError(f"{name} must be whole numbers, got {array[bad].flat[0]!r}")
    array = array.astype(np.int64)
    if (array < 0).any():
        raise ValueError(f"{name} must be >= 0, got {int(array[array < 0].flat[0])}")
    return array


def _one_problem(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    terms = 1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(terms))


def pass_at_k_per_problem(n: Counts, c: Counts, k: int) -> np.ndarray:
    """Unbiased pass@k of each problem: ``1 − C(n−c, k)/C(n, k)`` (Chen et al. 2021, Eq. 1), as float64.

    ``n`` samples per problem, ``c`` correct ones: ints for one problem, or equal-length sequences
    (arrays) with one entry per problem; a scalar ``n`` with a sequence ``c`` means the same ``n`` for
    every problem. Needs ``k >= 1`` and ``0 <= c <= n`` and ``n >= k`` for every problem.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    ns, cs = _counts("n", n), _counts("c", c)
    if ns.ndim == 1 and cs.ndim == 1 and ns.shape != cs.shape:
        raise ValueError(f"n and c must have one entry per problem, got {ns.size} values of n and {cs.size} of c")
    ns, cs = np.broadcast_arrays(np.atleast_1d(ns), np.atleast_1d(cs))
    for problem, (n_i, c_i) in enumerate(zip(ns.tolist(), cs.tolist(), strict=True)):
        where = f" (problem {problem})" if ns.size > 1 else ""
        if n_i < k:
            raise ValueError(f"n must be >= k: pass@{k} needs at least {k} samples, got n={n_i}{where}")
        if c_i > n_i:
            raise ValueError(f"c must be <= n (correct samples among n), got c={c_i} > n={n_i}{where}")
    return np.array([_one_problem(n_i, c_i, int(k)) for n_i, c_i in zip(ns.tolist(), cs.tolist(), strict=True)])


def pass_at_k(n: Counts, c: Counts, k: int) -> float:
    """Unbiased pass@k estimate over problems: the mean of ``pass_at_k_per_problem`` (same arguments)."""
    return float(np.mean(pass_at_k_per_problem(n, c, k)))


def mean_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, resamples: int = 10_000,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per problem): the ``(1 − level)/2`` and
    ``(1 + level)/2`` quantiles of the means of ``resamples`` resamples of the problems with replacement
    (Efron & Tibshirani 1993, §13.3). It covers the choice of problems, not the training seed's spread."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"values must be a non-empty 1-d sequence of finite numbers, got shape {array.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must be in (0, 1)")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples={resamples!r} must be an int >= 1")
    picks = np.random.default_rng(seed).integers(0, array.size, size=(resamples, array.size))
    means = array[picks].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
