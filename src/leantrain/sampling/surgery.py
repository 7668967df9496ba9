"""Model surgery: convert chosen linear layers to SampledLinear in place, and back.

Like PEFT's inject/unload: layers are chosen by a preset or name patterns and/or a ``filter_fn``
(leantrain.module_names, shared by every conversion), converted in place, and what changed is
returned. Works on stock PyTorch modules and stock HF Transformers / PEFT models; no model code is
copied or edited.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from leantrain.module_names import FilterFn, Targets, find_targets
from leantrain.sampling.config import SamplingConfig
from leantrain.sampling.layers import SampledLinear
from leantrain.sampling.sampler import RowSampler


def apply_sampling(
    model: nn.Module, config: SamplingConfig, targets: Targets | None = "paper", filter_fn: FilterFn | None = None
) -> dict[str, str]:
    """Convert the linear layers of ``model`` that ``targets`` and ``filter_fn`` choose (see
    ``leantrain.module_names``; default: the "paper" preset) in place; returns name -> description.

    Layers that are already sampled get the new config. Apply LoRA (PEFT) before sampling.
    """
    if not isinstance(config, SamplingConfig):
        raise ValueError(f"config must be a SamplingConfig, got {type(config).__name__}")
    changed = {}
    for index, name in enumerate(find_targets(model, targets, filter_fn)):
        module = model.get_submodule(name)
        sampler = RowSampler(config, name=name, index=index)
        if isinstance(module, SampledLinear):
            module.sampler = sampler
            changed[name] = f"SampledLinear sampler -> {config.method}@{config.budget}"
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, SampledLinear(module, sampler))
        changed[name] = f"SampledLinear({type(module).__name__}, {config.method}@{config.budget})"
    return changed


def sampled_layers(model: nn.Module) -> dict[str, SampledLinear]:
    """The converted layers of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SampledLinear)}


def remove_sampling(model: nn.Module) -> dict[str, str]:
    """Put the original linear modules back (same objects, same Parameters); returns name -> their type.
    Refused after FSDP2's ``fully_shard``, which swaps the layers' Parameters: the originals would be stale."""
    moved = [name for name, layer in sampled_layers(model).items()
             if layer.weight is not layer.base.weight or layer.bias is not layer.base.bias]
    if moved:
        raise ValueError(f"remove_sampling: the parameters of {', '.join(moved[:3])} are no longer those of the "
                         "layers they wrap (FSDP2's fully_shard swaps them); call remove_sampling before fully_shard")
    restored = {}
    for name, layer in sampled_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
        restored[name] = type(layer.base).__name__
    return restored


def sampling_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Every sampled layer's random-generator and importance state, as flat tensors by name.

    Save it beside the model's state_dict (e.g. in the same safetensors file) so that a resumed
    run draws the same rows as an uninterrupted one.
    """
    return {
        f"{name}.{key}": value
        for name, layer in sampled_layers(model).items()
        for key, value in layer.sampler.state_dict().items()
    }


def load_sampling_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Restore what ``sampling_state_dict`` saved; the model must have the same sampled layers."""
    layers = sampled_layers(model)
    per_layer: dict[str, dict[str, Tensor]] = {name: {} for name in layers}
    for key, value in state.items():
        name = next((n for n in layers if key.startswith(n + ".")), None)
        if name is None:
            raise ValueError(f"sampling state key {key!r} belongs to no sampled layer of {type(model).__name__}")
        per_layer[name][key[len(name) + 1:]] = value
    for name, layer in layers.items():
        layer.sampler.load_state_dict(per_layer[name])


@contextmanager
def sample_ids(model: nn.Module, ids: Tensor | Sequence[int]) -> Iterator[None]:
    """Tell the sampled layers which training examples the next forward pass holds.

    Needed by ``importance="cached"``, which remembers each example's output-gradient norms
    from the last time it was seen; one non-negative integer id per example (dimension 0).
    """
    ids = torch.as_tensor(ids)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dim() != 1:
        raise ValueError(f"sample ids must be a 1-D sequence of integers, got {ids.dtype} of shape {tuple(ids.shape)}")
    layers = sampled_layers(model).values()
    for layer in layers:
        layer.sampler.sample_ids = ids
    try:
        yield
    finally:
        for layer in layers:
            layer.sampler.sample_ids = None


@contextmanager
def exact_gradients(model: nn.Module) -> Iterator[None]:
    """Inside this block the sampled layers run as the stock modules (exact dW, all rows kept).

    For comparing a sampled gradient with the exact one at the same parameters, or for an
    occasional exact step. Stateful importance sources learn nothing from exact steps.
    """
    layers = sampled_layers(model).values()
    for layer in layers:
        layer.sampling_enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.sampling_enabled = True
