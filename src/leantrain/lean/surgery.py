"""``apply_lean`` / ``remove_lean``: swap the memory-lean companions into a model in place, and back.

Module-level companions replace stock modules (``nn.Dropout``, ``nn.ReLU``, ``nn.LayerNorm``,
RMSNorms, MLP blocks, activations after a Linear) and share their parameter objects; attention is switched through HF's
``attn_implementation``; the chunked LM loss is computed in the head's companion (``LeanLMHead``),
to which an instance-level ``forward`` hands the labels. Like PEFT's
inject/unload and torchao's ``quantize_(model, config, filter_fn)``; modules are chosen with the
selector of every conversion (leantrain.module_names).

Under FSDP2, apply lean before ``fully_shard`` and remove it before too. With sampled layers
(``lt.apply_sampling``), apply those first. Blocks holding them are recomputed
too: a rerun before the backward draws the same rows (sampling/sampler.py); with
``importance="cached"``, run the backward inside ``lt.sample_ids`` as well.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import nn

from leantrain.lean.activation import ActivationFromLinearInput, activation_pairs
from leantrain.lean.attention import LEAN_ATTENTION, SwappedAttention, register_lean_attention
from leantrain.lean.config import LeanConfig
from leantrain.lean.dropout import LeanDropout
from leantrain.lean.lm_loss import LeanLMHead, LossShape, lean_causal_lm_forward
from leantrain.lean.logit_transform import logit_transform
from leantrain.lean.norms import LeanLayerNorm, LeanRMSNorm, looks_like_rms_norm
from leantrain.lean.recompute import (
    ATTENTION_CLASS_SUFFIXES,
    MLP_CLASS_SUFFIXES,
    RecomputedModule,
    is_recomputable,
)
from leantrain.lean.relu import LeanReLU
from leantrain.lean.replacement import LeanReplacement
from leantrain.module_names import FilterFn, module_filter
from leantrain.names import TARGET_PRESETS

_PREVIOUS_ATTENTION = "_leantrain_previous_attn_implementation"
_SWAPPABLE_ATTENTION = ("eager", "sdpa")


def _module_replacement(module: nn.Module, config: LeanConfig) -> type[LeanReplacement] | None:
    if config.dropout and type(module) is nn.Dropout:
        return LeanDropout
    if config.relu and type(module) is nn.ReLU:
        return LeanReLU
    if config.norms and type(module) is nn.LayerNorm:
        return LeanLayerNorm
    if config.norms and looks_like_rms_norm(module):
        return LeanRMSNorm
    return None


def _hf_configs(model: nn.Module) -> list[tuple[str, object]]:
    """Each distinct HF config held by the model's modules, with the name prefix of its first holder
    (T5's encoder and decoder keep their own copies of the model's config)."""
    found: dict[int, tuple[str, object]] = {}
    for name, module in model.named_modules():
        hf_config = getattr(module, "config", None)
        if hasattr(hf_config, "_attn_implementation") and id(hf_config) not in found:
            found[id(hf_config)] = (f"{name}." if name else "", hf_config)
    return list(found.values())


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def apply_lean(
    model: nn.Module,
    config: LeanConfig | None = None,
    targets: Sequence[str] | None = None,
    filter_fn: FilterFn | None = None,
) -> dict[str, str]:
    """Swap lean companions into ``model`` in place, at the modules that the name patterns ``targets``
    and ``filter_fn(module, name)`` choose (see ``leantrain.module_names``; None: every module).
    The presets choose linear layers, which lean leaves as they are, so ``targets`` takes patterns.

    Returns what changed: module name (or ``config._attn_implementation`` / ``forward``) -> the
    companion now there. Applying twice changes nothing more; ``remove_lean`` undoes it.
    """
    config = config or LeanConfig()
    if not isinstance(config, LeanConfig):
        raise ValueError(f"config must be a LeanConfig, got {type(config).__name__}")
    if isinstance(targets, str):
        raise ValueError(f"apply_lean: targets={targets!r} must be a list of module-name patterns; the presets "
                         f"{TARGET_PRESETS} choose linear layers, which lean does not replace")
    selected = module_filter(model, targets, filter_fn)
    changed: dict[str, str] = {}
    _swap_modules(model, config, selected, changed)
    _wrap_recomputed_blocks(model, config, selected, changed)
    if config.activations:
        _swap_activations(model, selected, changed)
    if config.attention:
        _swap_attention(model, changed)
    if config.lm_loss:
        _swap_lm_head(model, config, changed)
    return changed


def _swap_modules(model: nn.Module, config: LeanConfig, selected: FilterFn, changed: dict[str, str]) -> None:
    """Dropout, ReLU and norms: module-for-module companions sharing the stock modules' parameters."""
    modules = [(n, m) for n, m in model.named_modules() if n and not isinstance(m, LeanReplacement)]
    for name, module in modules:
        replacement = _module_replacement(module, config)
        if replacement is not None and selected(module, name):
            _swap(model, name, replacement(module))
            changed[name] = replacement.__name__


def _wrap_recomputed_blocks(model: nn.Module, config: LeanConfig, selected: FilterFn,
                            changed: dict[str, str]) -> None:
    """MLP and attention blocks that keep only their input and rerun themselves in backward."""
    suffixes = (MLP_CLASS_SUFFIXES if config.recompute_mlp else ()) + (
        ATTENTION_CLASS_SUFFIXES if config.recompute_attention else ())
    wrapped: list[str] = []
    for name, module in list(model.named_modules()):
        if any(name.startswith(outer + ".") for outer in wrapped):
            continue  # inside a recomputed block already
        if isinstance(module, RecomputedModule):
            wrapped.append(name)
        elif name and suffixes and is_recomputable(module, suffixes) and selected(module, name):
            _swap(model, name, RecomputedModule(module))
            wrapped.append(name)
            changed[name] = f"RecomputedModule({type(module).__name__})"


def _swap_activations(model: nn.Module, selected: FilterFn, changed: dict[str, str]) -> None:
    """Activations right after a Linear recompute their input from the Linear's input."""
    for block_name, block in list(model.named_modules()):
        if isinstance(block, LeanReplacement):
            continue
        for activation_name, linear in activation_pairs(block):
            name = f"{block_name}.{activation_name}" if block_name else activation_name
            activation = block._modules[activation_name]
            if selected(activation, name):
                setattr(block, activation_name, ActivationFromLinearInput(activation, linear))
                changed[name] = f"ActivationFromLinearInput({type(activation).__name__})"


# Attention terms of some HF models that the lean attention does not compute (Gemma 2's logit soft-capping,
# attention sinks): their models keep their exact attention.
_UNSUPPORTED_ATTENTION = ("attn_logit_softcapping", "sinks", "s_aux")


def _swap_attention(model: nn.Module, changed: dict[str, str]) -> None:
    """HF eager/sdpa attention -> the recomputing attention, through ``config._attn_implementation``."""
    if hasattr(model, _PREVIOUS_ATTENTION):
        return
    previous = [(name, hf_config, hf_config._attn_implementation) for name, hf_config in _hf_configs(model)
                if hf_config._attn_implementation in _SWAPPABLE_ATTENTION]
    unsupported = [(name, key) for name, hf_config, _ in previous for key in _UNSUPPORTED_ATTENTION
                   if getattr(hf_config, key, None)]
    for name, key in unsupported:  # the lean attention has no such term: the exact eager attention stays
        changed[f"{name}config._attn_implementation"] = f"kept ({key} is not supported by the lean attention)"
    previous = [entry for entry in previous if entry[0] not in {name for name, _ in unsupported}]
    if previous:
        register_lean_attention()
        setattr(model, _PREVIOUS_ATTENTION, SwappedAttention([(c, value) for _, c, value in previous]))
    for name, hf_config, value in previous:
        hf_config._attn_implementation = LEAN_ATTENTION
        changed[f"{name}config._attn_implementation"] = f"{value} -> {LEAN_ATTENTION}"


def _swap_lm_head(model: nn.Module, config: LeanConfig, changed: dict[str, str]) -> None:
    """A causal LM's head computes the fused loss inside its own forward (FSDP2 unshards it there)."""
    transform = logit_transform(model)
    if "forward" in model.__dict__ or transform is None:
        return
    head = model.get_output_embeddings()
    head_name = next(name for name, module in model.named_modules() if module is head)
    rows = max(1, config.lm_loss_chunk_logits // head.out_features)
    _swap(model, head_name, LeanLMHead(head, rows, LossShape(transform)))
    model.forward = functools.partial(lean_causal_lm_forward, model)
    changed[head_name] = "LeanLMHead"
    changed["forward"] = f"fused LM-head loss ({rows} rows, {rows * head.out_features:,} logits per chunk)"


def remove_lean(model: nn.Module) -> dict[str, str]:
    """Put back every stock module, the attention implementation and the stock forward.
    Returns what was restored: name -> the stock type or setting."""
    moved = [name for name, module in model.named_modules()
             if isinstance(module, LeanReplacement) and not module.shares_parameters()]
    if moved:
        raise ValueError(f"remove_lean: the parameters of {', '.join(moved[:3])} are no longer those of the modules "
                         "they replaced (FSDP2's fully_shard swaps them); call remove_lean before fully_shard")
    restored: dict[str, str] = {}
    for name, module in sorted(model.named_modules(), key=lambda item: -item[0].count(".")):
        if isinstance(module, LeanReplacement):
            original = module.restore()
            _swap(model, name, original)
            restored[name] = type(original).__name__
    if hasattr(model, _PREVIOUS_ATTENTION):
        previous = {id(hf_config): value for hf_config, value in getattr(model, _PREVIOUS_ATTENTION).previous}
        for name, hf_config in _hf_configs(model):
            if id(hf_config) in previous:
                hf_config._attn_implementation = previous[id(hf_config)]
                restored[f"{name}config._attn_implementation"] = previous[id(hf_config)]
        delattr(model, _PREVIOUS_ATTENTION)
    forward = model.__dict__.get("forward")
    if isinstance(forward, functools.partial) and forward.func is lean_causal_lm_forward:
        del model.forward
        restored["forward"] = f"{type(model).__name__}.forward"
    return restored


def lean_modules(model: nn.Module) -> dict[str, LeanReplacement]:
    """The lean companions currently in ``model`` by name (as ``sampled_layers`` for sampled ones)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LeanReplacement)}
