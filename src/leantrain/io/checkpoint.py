"""Whole training state in one safetensors file, written atomically.

Any nested mix of dicts, lists, tuples, tensors and JSON scalars (model, optimizer and scheduler
``state_dict()``s, RNG states, counters) is split into the tensors — stored as safetensors under
their path, e.g. ``model/lm_head.weight`` or ``optimizer/state/0/exp_avg`` — and a JSON skeleton
kept in the file's metadata. Loading rebuilds the same structure: tuples stay tuples and integer
dict keys (optimizer state) stay integers. The file is written next to its target and moved into
place with ``os.replace``, so a crash never leaves a half-written checkpoint.

>>> save_checkpoint("run/checkpoint.safetensors", {"model": model.state_dict(), "step": 100})
>>> state = load_checkpoint("run/checkpoint.safetensors"); model.load_state_dict(state["model"])
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

_METADATA_KEY = "leantrain.state"


def _stored(tensor: torch.Tensor, storages: set[int]) -> torch.Tensor:
    """``tensor`` as safetensors writes it: itself where it can (the state is not copied into memory whole, a
    copy the size of the model and its optimizer states); a contiguous CPU copy where its storage is shared with
    a tensor already taken (tied weights), is not on the CPU, or is not contiguous."""
    tensor = tensor.detach()
    storage = tensor.untyped_storage().data_ptr()
    if tensor.device.type != "cpu" or not tensor.is_contiguous() or storage in storages:
        return tensor.to("cpu", copy=True).contiguous()
    storages.add(storage)
    return tensor


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor], storages: set[int]) -> Any:
    if isinstance(value, torch.Tensor):
        if key in tensors:
            raise ValueError(f"two tensors map to the checkpoint key {key!r}; rename one of the dict keys")
        tensors[key] = _stored(value, storages)
        return {"__tensor__": key}
    if isinstance(value, Mapping):
        items = [[k, _encode(v, f"{key}/{k}".lstrip("/"), tensors, storages)] for k, v in value.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k, _ in items):
            return dict(items)
        return {"__items__": items}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{key}/{i}", tensors, storages) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}/{i}", tensors, storages) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint {type(value).__name__} at {key!r}: use tensors, dicts, lists, tuples "
                    f"and JSON scalars")


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` (a ``.safetensors`` file) atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, "", tensors, set())
    temporary = path.with_name(f".{path.name}.tmp")
    save_file(tensors, temporary, metadata={_METADATA_KEY: json.dumps(skeleton)})
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`, tensors on ``device``."""
    with safe_open(str(path), framework="pt", device=str(device)) as file:
        metadata = file.metadata() or {}
        if _METADATA_KEY not in metadata:
            raise ValueError(f"{path} is not a leantrain checkpoint (no {_METADATA_KEY!r} metadata)")
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return _decode(json.loads(metadata[_METADATA_KEY]), tensors)
