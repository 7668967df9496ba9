"""What a model predicts on held-out text, from its logits: the Hyperfitting paper's mean predictive
entropy and top-1 probability (Carlsson et al., ICLR 2025, Table 3), and perplexity.

``logits`` has shape (..., V); ``mask`` (the leading shape, bool) chooses the positions counted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _mean(values: Tensor, mask: Tensor | None) -> float:
    if mask is not None:
        values = values[mask]
    if values.numel() == 0:
        raise ValueError("no positions to average over")
    return float(values.double().mean())


def mean_entropy(logits: Tensor, mask: Tensor | None = None) -> float:
    """Mean over positions of the softmax entropy −Σ p log p, in nats."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return _mean(-(log_p.exp() * log_p).sum(-1), mask)


def mean_top1_probability(logits: Tensor, mask: Tensor | None = None) -> float:
    """Mean over positions of the largest softmax probability."""
    return _mean(torch.softmax(logits.float(), dim=-1).amax(-1), mask)


def perplexity(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> float:
    """exp of the mean cross-entropy of ``targets`` (ids, the leading shape of ``logits``) — for a
    causal LM pass ``logits[:, :-1]`` and ``input_ids[:, 1:]``."""
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match logits of shape {tuple(logits.shape)}")
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), reduction="none")
    return math.exp(_mean(nll.view(targets.shape), mask))


def temperature_for_entropy(logits: Tensor, entropy: float, mask: Tensor | None = None, steps: int = 60) -> float:
    """The temperature T at which ``mean_entropy(logits / T)`` equals ``entropy`` (bisection on log T;
    the entropy of softmax(z / T) grows with T). The follow-up's control ("Beyond Temperature",
    arXiv 2605.22579): sample the original model at the hyperfitted model's entropy."""
    vocabulary = logits.shape[-1]
    if not 0 < entropy < math.log(vocabulary):
        raise ValueError(f"entropy={entropy!r} must be in (0, log V = {math.log(vocabulary):.3f})")
    low, high = math.log(1e-3), math.log(1e3)
    for _ in range(steps):
        middle = (low + high) / 2
        if mean_entropy(logits / math.exp(middle), mask) < entropy:
            low = middle
        else:
            high = middle
    return math.exp((low + high) / 2)
