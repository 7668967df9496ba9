"""optimizer_state_bytes: how much memory an optimizer's state holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def _tensors(value: Any) -> Iterable[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes of the storages behind every tensor in ``optimizer.state``, each storage counted once
    (0 for no optimizer).

    Includes tensors an optimizer shares across parameters where it reports them through
    ``shared_tensors()`` (DCTAdamW's one basis per size). Python numbers (step counters) are not counted.
    """
    if optimizer is None:
        return 0
    tensors = [*_tensors(list(optimizer.state.values())), *getattr(optimizer, "shared_tensors", list)()]
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[(tensor.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())
