"""Side-by-side timing for the benchmarks: one warm-up call per run, then interleaved repeats, so
load on the shared machine hits every run alike; the median of each run is reported."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch


def interleaved_medians(step: Callable[[str], float], names: Iterable[str], repeats: int) -> dict[str, float]:
    """``step(name)`` runs one timed step of run ``name`` and returns its seconds."""
    names = list(names)
    for name in names:
        step(name)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name in names:
            times[name].append(step(name))
    return {name: statistics.median(times[name]) for name in names}


def timed_training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    """Seconds of one forward, backward and optimizer step of an HF model on ``batch``."""
    model.train()
    optimizer.zero_grad()
    start = time.perf_counter()
    model(**batch).loss.backward()
    optimizer.step()
    return time.perf_counter() - start
