"""A fixed random sample of equal-length token sequences from a corpus, and held-out ones.

Hyperfitting (Carlsson et al., ICLR 2025) trains on a small fixed set of sequences (2,000 of 256
tokens) and evaluates continuations of held-out text. Each document is tokenized and cut into
non-overlapping windows of ``seq_len`` tokens (a shorter rest is dropped); a seeded shuffle of all
windows gives the training sample, and the held-out windows come from documents that gave none to
training first, then from the other windows left — so no held-out window overlaps a training one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from leantrain.validation import is_positive_int

Encode = Callable[[list[str]], list[list[int]]]


@dataclass(frozen=True)
class FixedSample:
    train: Tensor  # (n, seq_len) token ids
    held_out: Tensor  # (m, seq_len), none overlapping a training window
    held_out_unseen_documents: int  # how many held-out windows come from documents absent from training


def windows(documents: Sequence[list[int]], seq_len: int) -> list[tuple[int, list[int]]]:
    """(document index, ids) of every whole ``seq_len``-token window, in document order."""
    return [(d, ids[start:start + seq_len]) for d, ids in enumerate(documents)
            for start in range(0, len(ids) - seq_len + 1, seq_len)]


def fixed_sample(documents: Sequence[str], encode: Encode, seq_len: int, sequences: int, held_out: int,
                 seed: int) -> FixedSample:
    """``sequences`` training windows and ``held_out`` held-out windows (see the module docstring);
    ValueError when the corpus has too few."""
    for name, value in (("seq_len", seq_len), ("sequences", sequences), ("held_out", held_out)):
        if not is_positive_int(value):
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    texts = [text for text in documents if text.strip()]
    if not texts:
        raise ValueError("the corpus has no text")
    pool = windows(encode(texts), seq_len)
    if len(pool) < sequences + held_out:
        raise ValueError(f"the corpus has {len(pool)} windows of {seq_len} tokens; {sequences} training and "
                         f"{held_out} held-out sequences need {sequences + held_out} (use more text, shorter "
                         "sequences or fewer of them)")
    random.Random(seed).shuffle(pool)
    train, rest = pool[:sequences], pool[sequences:]
    trained = {document for document, _ in train}
    unseen = [ids for document, ids in rest if document not in trained]
    seen = [ids for document, ids in rest if document in trained]
    chosen = (unseen + seen)[:held_out]
    return FixedSample(torch.tensor([ids for _, ids in train]), torch.tensor(chosen), min(len(unseen), held_out))
