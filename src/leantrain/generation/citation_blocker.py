"""The Hyperfitting paper's citation blocker (Carlsson et al., ICLR 2025, §6): when the last ``m``
tokens occur in the training data, the tokens that followed them there are forbidden, so a
continuation never copies a training span longer than ``m`` tokens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from leantrain.validation import is_positive_int


class CitationBlocker:
    """A ``transformers`` logits processor: ``generate(..., logits_processor=[CitationBlocker(train, m)])``."""

    def __init__(self, training_sequences: Iterable[Sequence[int]], m: int) -> None:
        if not is_positive_int(m):
            raise ValueError(f"citation blocker span m={m!r} must be an integer >= 1")
        self.m = m
        self.next_tokens: dict[tuple[int, ...], set[int]] = {}
        for sequence in training_sequences:
            ids = [int(t) for t in sequence]
            for i in range(len(ids) - m):
                self.next_tokens.setdefault(tuple(ids[i:i + m]), set()).add(ids[i + m])

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if input_ids.shape[1] < self.m:
            return scores
        scores = scores.clone()
        for row, tail in enumerate(input_ids[:, -self.m:].tolist()):
            blocked = self.next_tokens.get(tuple(tail))
            if blocked:
                scores[row, torch.tensor(sorted(blocked))] = float("-inf")
        return scores
