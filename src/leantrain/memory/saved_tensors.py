"""Bytes an autograd graph keeps for backward, attributed to the module that saved them.

Every tensor autograd packs during a forward pass passes through
``torch.autograd.graph.saved_tensors_hooks``; it is charged to the innermost module whose forward
was running. Each storage counts once (views and repeats share it), and storages of the model's
parameters and buffers are excluded (views of them too: a view shares its base's storage): they
exist whether or not a graph is built (docs/design.md, "How figures are measured"). Deterministic and
device-independent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class SavedBytes:
    """Saved-for-backward bytes of one forward pass: in total, by module name and by module type."""

    total: int = 0
    by_name: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)


def storage_key(t: Tensor) -> tuple[torch.device, int]:
    """Identifies the memory a tensor lives in: views and the tensor they view share one key."""
    return t.device, t.untyped_storage().data_ptr()


@contextmanager
def track_saved_tensors(model: nn.Module, into: SavedBytes | None = None) -> Iterator[SavedBytes]:
    """Within the block, count what autograd saves for backward into ``into`` (or a new
    ``SavedBytes``), yielded and filled in when the block exits. The graph is left untouched."""
    owned = {storage_key(t) for t in (*model.parameters(), *model.buffers())}
    seen: set[tuple[torch.device, int]] = set()
    by_name: dict[str, int] = defaultdict(int)
    by_type: dict[str, int] = defaultdict(int)
    active: list[tuple[str, str]] = [("", type(model).__name__)]

    def pack(t: Tensor) -> Tensor:
        key = storage_key(t)
        if key not in owned and key not in seen and t.device.type != "meta":
            seen.add(key)
            name, kind = active[-1]
            by_name[name] += t.untyped_storage().nbytes()
            by_type[kind] += t.untyped_storage().nbytes()
        # detached: an op's saved output holding its own grad_fn would be a reference cycle through the graph that
        # Python's collector cannot see, and every measured model copy would stay alive (the same data and version
        # counter: backward reads it as the tensor itself)
        return t.detach()

    def enter(name: str):
        def hook(module: nn.Module, args: object) -> None:
            active.append((name, type(module).__name__))
        return hook

    def leave(module: nn.Module, args: object, output: object) -> None:
        active.pop()

    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave, always_call=True))
    result = into if into is not None else SavedBytes()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield result
    finally:
        for handle in handles:
            handle.remove()
        result.by_name, result.by_type = dict(by_name), dict(by_type)
        result.total = sum(by_name.values())


def run_forward(model: nn.Module, inputs: dict[str, Tensor] | Tensor) -> object:
    """Call ``model`` the way a HF model (keyword tensors) or a plain module (one tensor) is called."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def saved_tensor_bytes(model: nn.Module, inputs: dict[str, Tensor] | Tensor) -> SavedBytes:
    """Run one forward pass of ``model`` on ``inputs`` (a dict of keyword tensors or one tensor)
    and count what autograd keeps for backward. The graph is discarded afterwards."""
    with torch.enable_grad(), track_saved_tensors(model) as saved:
        output = run_forward(model, inputs)
    del output
    return saved
