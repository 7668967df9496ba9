"""SampledLinear: a drop-in stand-in for nn.Linear (or HF GPT-2's Conv1D) with a sampled dW."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from leantrain.sampling.function import sampled_linear
from leantrain.sampling.sampler import RowSampler


class SampledLinear(nn.Module):
    """Wraps a linear module; its weight gradient is estimated from the rows ``sampler`` keeps.

    The wrapper registers the wrapped module's own Parameter objects under the same names, so the
    model's state_dict keys and any optimizer built beforehand stay valid. The wrapped module is
    kept unregistered as ``base`` and is what ``remove_sampling`` puts back. In eval mode, under
    ``torch.no_grad`` or inside ``exact_gradients`` the forward is the wrapped module's own linear
    map, computed from the wrapper's registered weight: FSDP2 swaps in the unsharded weight there,
    not in ``base``.
    """

    def __init__(self, base: nn.Module, sampler: RowSampler) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.__dict__["base"] = base
        self.weight_is_transposed = not isinstance(base, nn.Linear)  # Conv1D keeps W as [in, out]
        self.sampler = sampler
        self.sampling_enabled = True  # False inside leantrain.exact_gradients(model)

    @property
    def in_features(self) -> int:
        return self.weight.shape[0 if self.weight_is_transposed else 1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1 if self.weight_is_transposed else 0]

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_floating_point():
            raise ValueError(
                f"{self.sampler.name or 'SampledLinear'}: input dtype {x.dtype} is not a floating-point "
                "type (float32, bfloat16 or float16)"
            )
        weight = self.weight.t() if self.weight_is_transposed else self.weight
        if not (self.training and self.sampling_enabled and torch.is_grad_enabled()):
            return nn.functional.linear(x, weight, self.bias)
        if x.dim() == 1:
            return self.forward(x[None])[0]
        return sampled_linear(x, weight, self.bias, self.sampler)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, sampler={self.sampler}"
        )
