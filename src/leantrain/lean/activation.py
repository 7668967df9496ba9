"""An activation that keeps nothing of its own: in backward its input is recomputed from the input
of the Linear before it, which that Linear (or the norm before it) keeps anyway.

Stock GELU/SiLU save their input h = x·Wᵀ + b (B·L·4d floats in BERT's FFN). Recomputing h from x
costs one matmul in backward and saves that whole tensor; unlike recomputing the MLP block
(recompute.py) it also works when the Linear is a sampled one (``lt.apply_sampling``), whose
forward is exact. Exact: h is recomputed by the same linear op, so gradients are bit-identical
(within float rounding if the Linear is computed by another kernel).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.distributed.tensor import DTensor

from leantrain.lean.replacement import LeanReplacement
from leantrain.module_names import linear_weight

# (Linear attribute, activation attribute) of HF MLP blocks: BERT, Llama-style, GPT-2, T5, OPT/BART
ACTIVATION_AFTER_LINEAR = (
    ("dense", "intermediate_act_fn"),
    ("gate_proj", "act_fn"),
    ("c_fc", "act"),
    ("wi", "act"),
    ("wi_0", "act"),
    ("fc1", "activation_fn"),
)


class ActivationFromLinearInputFunction(Function):
    @staticmethod
    def forward(ctx, h: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, activation: nn.Module) -> Tensor:
        ctx.save_for_backward(x, weight, bias)
        ctx.activation = activation
        return activation(h)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, bias = ctx.saved_tensors
        with torch.enable_grad():
            h = nn.functional.linear(x, weight, bias).detach().requires_grad_()
            (grad_h,) = torch.autograd.grad(ctx.activation(h), h, grad)
        return grad_h, None, None, None, None


class ActivationFromLinearInput(LeanReplacement):
    """Drop-in for the activation module after ``linear``; a forward pre-hook on ``linear`` hands
    it the Linear's input (a plain reference, dropped at once; what backward needs is saved)."""

    def __init__(self, original: nn.Module, linear: nn.Module) -> None:
        super().__init__(original)
        self.__dict__["linear"] = linear
        self.__dict__["hook"] = linear.register_forward_pre_hook(self.remember_input)

    def remember_input(self, module: nn.Module, args: tuple) -> None:
        self.__dict__["pending_input"] = args[0] if args else None

    def forward(self, h: Tensor) -> Tensor:
        x = self.__dict__.pop("pending_input", None)
        if isinstance(getattr(self.linear, "weight", None), DTensor):
            raise ValueError(
                f"lean activation after a {type(self.linear).__name__}: that layer's weight is sharded here (an FSDP2 "
                "unit of its own, so unsharded only in its own forward); fully_shard the block holding both, or "
                "apply_lean with LeanConfig(activations=False)")
        weight_bias = linear_weight(self.linear)
        if (not torch.is_grad_enabled() or x is None or weight_bias is None or x.shape[:-1] != h.shape[:-1]
                or weight_bias[0].shape[0] != h.shape[-1]):
            return self.original(h)
        return ActivationFromLinearInputFunction.apply(h, x, *weight_bias, self.original)

    def restore(self) -> nn.Module:
        self.hook.remove()
        self.__dict__.pop("pending_input", None)
        return super().restore()

    def extra_repr(self) -> str:
        return f"{type(self.original).__name__}, input recomputed from the Linear before it"


def activation_pairs(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """(activation attribute, Linear before it) of ``block`` that ``ActivationFromLinearInput`` fits."""
    pairs = []
    for linear_name, activation_name in ACTIVATION_AFTER_LINEAR:
        linear, activation = getattr(block, linear_name, None), block._modules.get(activation_name)
        if isinstance(linear, nn.Module) and isinstance(activation, nn.Module) and linear_weight(linear) is not None \
                and not isinstance(activation, LeanReplacement):
            pairs.append((activation_name, linear))
    return pairs
