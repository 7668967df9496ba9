"""Bytes of what a training step keeps besides activations: parameters, gradients, optimizer states.

Each storage counts once, so tied weights and state tensors that share memory are not counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from leantrain.memory.saved_tensors import storage_key


def unique_storage_bytes(tensors: Iterable[Tensor]) -> int:
    """Total bytes of the distinct storages behind ``tensors`` (views and shared tensors once)."""
    storages = {storage_key(t): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def parameter_bytes(model: nn.Module, trainable_only: bool = False) -> int:
    return unique_storage_bytes(p for p in model.parameters() if p.requires_grad or not trainable_only)


def buffer_bytes(model: nn.Module) -> int:
    return unique_storage_bytes(model.buffers())


def gradient_bytes(model: nn.Module) -> int:
    return unique_storage_bytes(p.grad for p in model.parameters() if p.grad is not None)


def batch_bytes(batch: dict[str, Tensor] | Tensor) -> int:
    return unique_storage_bytes(batch.values() if isinstance(batch, dict) else [batch])


def tensors_in(value: Any) -> Iterable[Tensor]:
    """Every tensor in a nest of dicts, lists and tuples; a wrapper subclass (``__tensor_flatten__``, such as
    torchao's 8-bit optimizer states) by the tensors it holds, which own the storage."""
    if isinstance(value, Tensor) and hasattr(value, "__tensor_flatten__"):
        for name in value.__tensor_flatten__()[0]:
            yield from tensors_in(getattr(value, name))
    elif isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from tensors_in(item)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes of the storages behind every tensor in ``optimizer.state``, each storage counted once
    (0 for no optimizer).

    Includes tensors an optimizer shares across parameters where it reports them through
    ``shared_tensors()`` (DCTAdamW's one basis per size). Python numbers (step counters) are not counted.
    """
    if optimizer is None:
        return 0
    return unique_storage_bytes([*tensors_in(list(optimizer.state.values())),
                                 *getattr(optimizer, "shared_tensors", list)()])
