"""An MLP block that keeps only its input and recomputes itself in backward.

The FFN's hidden activations are the largest saved tensors of a transformer block: BERT keeps the
pre-GELU tensor (GELU's input); a Llama MLP keeps the gate projection (SiLU's input), SiLU's output,
the up projection and their product. The block's input is the output of the norm before it, which
the lean norm keeps anyway (see norms.py), so keeping only that input and rerunning the block in
backward ("exact recompute from a kept input that another op already saves") removes all of them
for the cost of one more forward of the block. Exact: the recompute replays the same ops with the
same RNG state, so gradients are bit-identical to the stock block's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.lean.replacement import LeanReplacement

MLP_CLASS_SUFFIXES = ("MLP", "Intermediate", "DenseActDense", "DenseGatedActDense")


class RecomputedForwardFunction(Function):
    """``module(x)`` keeping ``x`` and the RNG state; parameters are inputs so their gradients
    flow through ``torch.autograd.grad`` like any other (no accumulation behind autograd's back)."""

    @staticmethod
    def forward(ctx, module: nn.Module, x: Tensor, *params: Tensor) -> Tensor:
        cuda_rng = torch.cuda.get_rng_state(x.device) if x.is_cuda else None
        ctx.save_for_backward(x, torch.get_rng_state(), cuda_rng)
        ctx.module = module
        return module(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, cpu_rng, cuda_rng = ctx.saved_tensors
        params = list(ctx.module.parameters())
        devices = [x.device] if x.is_cuda else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, x.device)
            detached = x.detach().requires_grad_(ctx.needs_input_grad[1])
            output = ctx.module(detached)
        wanted = [t for t, need in zip([detached, *params], ctx.needs_input_grad[1:], strict=True) if need]
        grads = iter(torch.autograd.grad(output, wanted, grad, allow_unused=True))
        return None, *(next(grads) if need else None for need in ctx.needs_input_grad[1:])


class RecomputedModule(LeanReplacement):
    """Wraps a one-tensor-in, one-tensor-out block; shares its submodules and parameters, so
    names, ``state_dict`` keys and parameter objects are unchanged."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__(original)
        self._modules, self._parameters, self._buffers = original._modules, original._parameters, original._buffers

    def forward(self, x: Tensor) -> Tensor:
        self.original.training = self.training
        if not torch.is_grad_enabled():
            return self.original(x)
        return RecomputedForwardFunction.apply(self.original, x, *self.original.parameters())

    def extra_repr(self) -> str:
        return f"recomputes {type(self.original).__name__} in backward"


# packages whose modules replay identically when rerun with the same RNG state; a module from
# elsewhere (e.g. a sampled linear layer drawing rows from its own generator) would not
_REPLAYABLE_PACKAGES = ("torch.", "transformers.", "peft.", "leantrain.lean.")


def is_recomputable_mlp(module: nn.Module) -> bool:
    """An MLP block by class name, made only of modules that replay exactly."""
    return type(module).__name__.endswith(MLP_CLASS_SUFFIXES) and all(
        type(m).__module__.startswith(_REPLAYABLE_PACKAGES) for m in module.modules())
