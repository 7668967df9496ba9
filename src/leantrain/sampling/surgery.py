"""Model surgery: convert chosen linear layers to SampledLinear in place, and back.

Like PEFT's inject/unload: layers are chosen by a preset or by name patterns, converted in place,
and the names of what changed are returned. Works on stock PyTorch modules and stock HF
Transformers / PEFT models; no model code is copied or edited.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from leantrain.module_names import name_matcher
from leantrain.sampling.config import SamplingConfig
from leantrain.sampling.layers import SampledLinear
from leantrain.sampling.sampler import RowSampler

# The layers the released WTA-CRS runs sampled: attention output projection and both FFN
# matrices; q, k, v stay exact (WTA-CRS code, "level 2"; brief §3.5). One suffix per model family.
PAPER_SUFFIXES = (
    r"attention\.output\.dense", r"intermediate\.dense", r"layer\.\d+\.output\.dense",  # BERT, RoBERTa
    r"attn\.c_proj", r"mlp\.c_fc", r"mlp\.c_proj",  # GPT-2
    r"self_attn\.o_proj", r"mlp\.gate_proj", r"mlp\.up_proj", r"mlp\.down_proj",  # Llama, Mistral, Qwen
    r"SelfAttention\.o", r"EncDecAttention\.o", r"DenseReluDense\.w[io](_[01])?",  # T5
    r"self_attn\.out_proj", r"encoder_attn\.out_proj", r"fc1", r"fc2",  # OPT, BART
    r"attention\.out_lin", r"ffn\.lin1", r"ffn\.lin2",  # DistilBERT
)
PRESETS = ("paper", "all-linear")


def linear_types() -> tuple[type[nn.Module], ...]:
    """Module types that can be converted: nn.Linear itself and HF's GPT-2 Conv1D (not subclasses)."""
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def _is_convertible(module: nn.Module) -> bool:
    return type(module) in linear_types() or isinstance(module, SampledLinear)


def find_targets(model: nn.Module, targets: str | Sequence[str] = "paper") -> list[str]:
    """Names of the linear layers ``targets`` selects.

    ``targets`` is a preset — "paper" (for a PEFT LoRA model: every LoRA A matrix; otherwise the
    attention output projection and both FFN matrices) or "all-linear" (every trainable linear
    layer but the output embedding) — or a list of module-name patterns. A pattern matches a name
    it equals, a dotted suffix of the name, or a regular expression matching the whole name.
    """
    names = [name for name, module in model.named_modules() if name and _is_convertible(module)]
    if isinstance(targets, str):
        if targets not in PRESETS:
            raise ValueError(
                f"targets={targets!r} is not a preset {PRESETS}; pass a list of name patterns instead"
            )
        if targets == "paper":
            lora_a = [name for name in names if re.search(r"(^|\.)lora_A\.[^.]+$", name)]
            suffix = re.compile(r"(^|\.)(" + "|".join(PAPER_SUFFIXES) + r")$")
            chosen = lora_a or [name for name in names if suffix.search(name)]
        else:
            output = getattr(model, "get_output_embeddings", lambda: None)()
            chosen = [
                name for name in names
                if model.get_submodule(name).weight.requires_grad and model.get_submodule(name) is not output
            ]
    else:
        matches = name_matcher(list(targets))
        chosen = [name for name in names if matches(name)]
    if not chosen:
        sample = ", ".join(names[:6]) or "none"
        raise ValueError(
            f"targets={targets!r} matched no linear layer in {type(model).__name__} "
            f"(its linear layers include: {sample})"
        )
    return chosen


def apply_sampling(
    model: nn.Module, config: SamplingConfig, targets: str | Sequence[str] = "paper"
) -> list[str]:
    """Convert the selected linear layers of ``model`` in place; returns their names.

    Layers that are already sampled get the new config. Apply LoRA (PEFT) before sampling.
    """
    if not isinstance(config, SamplingConfig):
        raise ValueError(f"config must be a SamplingConfig, got {type(config).__name__}")
    names = find_targets(model, targets)
    for index, name in enumerate(names):
        module = model.get_submodule(name)
        sampler = RowSampler(config, name=name, index=index)
        if isinstance(module, SampledLinear):
            module.sampler = sampler
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, SampledLinear(module, sampler))
    return names


def sampled_layers(model: nn.Module) -> dict[str, SampledLinear]:
    """The converted layers of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SampledLinear)}


def remove_sampling(model: nn.Module) -> list[str]:
    """Put the original linear modules back (same objects, same Parameters); returns their names."""
    names = list(sampled_layers(model))
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, model.get_submodule(name).base)
    return names


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
