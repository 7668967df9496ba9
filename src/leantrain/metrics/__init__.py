"""Metrics of generated and held-out text, as pure functions (the Hyperfitting protocol's and more).

- ``text``: type-token ratio, distinct-n, n-gram repetition, longest span copied from training data;
- ``predictive``: mean predictive entropy, top-1 probability and perplexity from a model's logits.
"""

from leantrain.metrics.predictive import (
    mean_entropy,
    mean_top1_probability,
    perplexity,
    temperature_for_entropy,
)
from leantrain.metrics.text import (
    NgramIndex,
    distinct_n,
    longest_copied_span,
    repetition_rate,
    type_token_ratio,
)

__all__ = [
    "NgramIndex",
    "distinct_n",
    "longest_copied_span",
    "mean_entropy",
    "mean_top1_probability",
    "perplexity",
    "repetition_rate",
    "temperature_for_entropy",
    "type_token_ratio",
]
