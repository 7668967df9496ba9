"""Blocks that keep only their inputs and recompute themselves in backward.

The FFN's hidden activations are the largest saved tensors of a transformer block: BERT keeps the
pre-GELU tensor; a Llama MLP keeps the gate projection, SiLU's output, the up projection and their
product. Attention keeps Q, K, V (and, stock, the L×L probabilities). A block's input is the output
of the norm before it, which the lean norm keeps anyway (norms.py), so keeping only that input and
rerunning the block in backward ("exact recompute from a kept input that another op already
saves") removes everything inside it for one more forward of the block. This is
``torch.utils.checkpoint`` (non-reentrant: its inputs go through ``save_for_backward``, so the
accounting sees them) applied per block. Exact: the rerun replays the same ops with the same RNG
state, so gradients are bit-identical to the stock block's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, noop_context_fn

from leantrain.lean.replacement import LeanReplacement

MLP_CLASS_SUFFIXES = ("MLP", "Intermediate", "DenseActDense", "DenseGatedActDense")
ATTENTION_CLASS_SUFFIXES = ("Attention",)
_CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")
# packages whose modules replay identically when rerun with the same RNG state before their backward
# (sampled layers too: they seed each draw by their backward-pass count, sampling/sampler.py)
_REPLAYABLE_PACKAGES = ("torch.", "transformers.", "peft.", "leantrain.lean.", "leantrain.sampling.")


class RecomputedModule(LeanReplacement):
    """Wraps a block; shares its submodules and parameters, so names, ``state_dict`` keys and
    parameter objects are unchanged. A call given a KV cache runs the block as is (a rerun would
    append to the cache twice): train with ``use_cache=False`` to have attention recomputed."""

    def __init__(self, original: nn.Module, context_fn: Callable = noop_context_fn) -> None:
        super().__init__(original)
        self._modules, self._parameters, self._buffers = original._modules, original._parameters, original._buffers
        self.context_fn = context_fn  # torch.utils.checkpoint's: a selective policy keeps some results

    def forward(self, *args, **kwargs):
        self.original.training = self.training
        if not torch.is_grad_enabled() or any(kwargs.get(name) is not None for name in _CACHE_ARGUMENTS):
            return self.original(*args, **kwargs)
        # torch.compile (dynamo) traces checkpoint only without a context_fn argument, so the no-op one is left out
        options = {} if self.context_fn is noop_context_fn else {"context_fn": self.context_fn}
        return checkpoint(self.original, *args, use_reentrant=False, **options, **kwargs)

    def extra_repr(self) -> str:
        return f"recomputes {type(self.original).__name__} in backward"


def is_recomputable(module: nn.Module, suffixes: tuple[str, ...]) -> bool:
    """A block whose class name ends with one of ``suffixes``, made only of modules that replay exactly."""
    return type(module).__name__.endswith(suffixes) and all(
        type(m).__module__.startswith(_REPLAYABLE_PACKAGES) for m in module.modules())
