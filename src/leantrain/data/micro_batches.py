"""A global batch split over processes and micro-batches: every process gets a contiguous share, cut into
micro-batches of at most ``grad_accum`` or of at most ``micro_tokens`` tokens, each weighted so that the summed,
process-averaged gradient is the gradient of the mean over the global batch (engine/loop.py runs them)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Batch = Mapping[str, Tensor]


def batch_size(batch: Batch) -> int:
    sizes = {key: len(value) for key, value in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch tensors differ in their first (example) dimension: {sizes}")
    return next(iter(sizes.values()))


def row_lengths(batch: Batch) -> Tensor:
    """Tokens per example: its ``attention_mask`` sum, or else the width of its first 2-D tensor."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum(1)
    wide = next((value for value in batch.values() if value.dim() >= 2), None)
    return torch.full((batch_size(batch),), 1 if wide is None else wide.shape[1])


def micro_batch_count(batch: Batch, world_size: int, grad_accum: int, micro_tokens: int | None) -> int:
    """Micro-batches per process: ``grad_accum``, or more until every micro-batch of every process holds at
    most ``micro_tokens`` tokens (its rows × its longest row), or else one per row of the smallest share (a
    row longer than that is a micro-batch of its own; a larger share then has micro-batches of two rows).
    The same on every process, which all see the global batch: FSDP2 gathers per forward."""
    if micro_tokens is None:
        return grad_accum
    shares = row_lengths(batch).tensor_split(world_size)
    fewest = min(len(share) for share in shares)
    for count in range(grad_accum, fewest + 1):
        if all(len(piece) * int(piece.max()) <= micro_tokens
               for share in shares for piece in share.tensor_split(count) if len(piece) > 1):
            return count
    return max(grad_accum, fewest)


def local_micro_batches(batch: Batch, rank: int, world_size: int, grad_accum: int,
                        micro_tokens: int | None = None) -> list[tuple[dict, float]]:
    """This process's micro-batches of a global batch (``micro_batch_count`` of them), each with its loss weight.

    The weight ``len(micro) · world_size / len(batch)`` turns a micro-batch's mean loss into its share
    of the global mean once DDP averages over processes and the micro-batches are summed.
    """
    total = batch_size(batch)
    if total < world_size * grad_accum:
        raise ValueError(f"a global batch of {total} examples cannot be split over {world_size} process(es) x "
                         f"{grad_accum} micro-batch(es); use a batch of at least {world_size * grad_accum}")
    count = micro_batch_count(batch, world_size, grad_accum, micro_tokens)
    local = {key: value.tensor_split(world_size)[rank] for key, value in batch.items()}
    micros = [{key: value.tensor_split(count)[i] for key, value in local.items()} for i in range(count)]
    return [(micro, batch_size(micro) * world_size / total) for micro in micros]
