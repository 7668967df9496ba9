"""Activation checkpointing of whole transformer layers, as a leantrain conversion.

``apply_checkpointing(model, "layers")`` wraps each layer (HF's ``GradientCheckpointingLayer``: a
decoder or encoder layer) in a :class:`~leantrain.lean.recompute.RecomputedModule`: it keeps only the
layer's input and reruns the layer in backward (Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost", arXiv 1604.06174 — one more forward for O(layers) instead of O(layers × ops) saved).
This is what HF's ``gradient_checkpointing_enable()`` does, with three differences that matter here:
it is a conversion like the others (``remove_lean`` undoes it), sampled layers inside replay the
same rows (so WTA-CRS keeps its sub-sample even in the rerun, and the recompute peak shrinks too), and
the lean companions applied afterwards work inside the rerun (they skip their own block recompute
there, which would recompute twice).

``"selective"`` is PyTorch's selective activation checkpointing (``create_selective_checkpoint_contexts``):
the rerun keeps the results of the matrix products and attention kernels from the forward and
recomputes only the cheap element-wise ops (norms, activations, residual adds, RoPE) — more memory
than ``"layers"`` (the matmul outputs), less time (no matmul is run twice).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts, noop_context_fn

from leantrain.lean.recompute import RecomputedModule
from leantrain.names import CHECKPOINTING

# What the selective policy keeps: the ops whose recompute costs a matrix product.
_EXPENSIVE_OPS = frozenset(
    getattr(torch.ops.aten, name).default
    for name in ("mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                 "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, name))


def keep_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective policy: save matrix-product results, recompute everything else."""
    return CheckpointPolicy.MUST_SAVE if op in _EXPENSIVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _is_layer(module: nn.Module) -> bool:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return isinstance(module, GradientCheckpointingLayer)


def apply_checkpointing(model: nn.Module, policy: str = "layers") -> dict[str, str]:
    """Wrap every transformer layer of ``model`` so that backward reruns it (in place).

    ``policy``: "layers" (keep each layer's input only) or "selective" (also keep its matmul results).
    Apply after sampling and before lean (``MemoryOptions.apply`` does). Returns module name -> what
    changed; ``remove_lean`` undoes it. Raises ValueError when the model has no HF layers to wrap.
    """
    if policy not in CHECKPOINTING:
        raise ValueError(f"checkpointing policy={policy!r} is not one of {CHECKPOINTING}")
    context_fn = (functools.partial(create_selective_checkpoint_contexts, keep_matmuls)
                  if policy == "selective" else noop_context_fn)
    changed: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, RecomputedModule) or not _is_layer(module):
            continue
        if any(name.startswith(outer + ".") for outer in changed):
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, RecomputedModule(module, context_fn))
        changed[name] = f"RecomputedModule({type(module).__name__}, {policy})"
    if not changed:
        raise ValueError(f"{type(model).__name__} has no transformer layers to checkpoint (HF layers subclass "
                         "transformers.modeling_layers.GradientCheckpointingLayer)")
    return changed
