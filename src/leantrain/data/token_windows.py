"""Random training windows and fixed validation windows over one long token sequence.

Training batch ``i`` is drawn by a generator seeded from (seed, i) alone, so the data position is a
single integer: a resumed run that asks for batch i gets the same tokens as the uninterrupted run.
"""

from __future__ import annotations

import torch
from torch import Tensor


class TokenWindows:
    """``tokens`` split into train (first ``1 − val_fraction``) and validation (the rest) parts."""

    def __init__(self, tokens: Tensor, seq_len: int, val_fraction: float = 0.05, seed: int = 0) -> None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        split = int(len(tokens) * (1.0 - val_fraction))
        self.train, self.val = tokens[:split], tokens[split:]
        if len(self.val) <= seq_len or len(self.train) <= seq_len:
            raise ValueError(f"seq_len must be shorter than both splits ({len(self.train)} train, {len(self.val)} "
                             f"validation tokens), got {seq_len}")
        self.seq_len, self.seed = seq_len, seed

    def train_batch(self, index: int, batch_size: int) -> Tensor:
        """Training batch number ``index``: ``batch_size`` windows at random offsets, shape (B, seq_len)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        starts = torch.randint(len(self.train) - self.seq_len + 1, (batch_size,), generator=generator)
        return torch.stack([self.train[s:s + self.seq_len] for s in starts.tolist()])

    def val_batches(self, batch_size: int, max_batches: int) -> list[Tensor]:
        """Consecutive non-overlapping validation windows, the same every call."""
        windows = self.val[:len(self.val) // self.seq_len * self.seq_len].view(-1, self.seq_len)
        return list(windows[:batch_size * max_batches].split(batch_size))
