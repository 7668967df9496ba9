"""The sampled linear autograd Function: exact forward, dX and db; dW from sampled rows.

WTA-CRS (Liu et al. 2023) replaces only the weight-gradient GEMM ``dW = dYᵀX`` (Eq. 1c) by an
unbiased estimate, so the layer keeps k of its N input rows instead of all of them. The output,
the input gradient ``dX = dY W`` (Eq. 1b) and the bias gradient are computed exactly, with the
same operations as ``torch.nn.functional.linear``'s backward, so they match it bit for bit.
Everything kept for backward goes through ``save_for_backward``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from leantrain.autocast import apply_as_autocast_matmul
from leantrain.fp32_matmuls import linear, matmul
from leantrain.sampling.estimators import RowSample, estimate_weight_grad
from leantrain.sampling.sampler import RowSampler


class SampledLinearFunction(torch.autograd.Function):
    """``y = x Wᵀ + b`` whose backward estimates dW from the rows ``sampler`` keeps."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, sampler: RowSampler) -> Tensor:
        output = linear(x, weight, bias)
        ctx.sampler = sampler
        ctx.input_shape = x.shape
        kept = indices = row_weights = sample_ids = None
        if ctx.needs_input_grad[1]:
            sample = sampler.draw(x)
            rows = x.reshape(-1, x.shape[-1])
            if sample is None:
                kept = rows
            else:
                kept = rows.index_select(0, sample.indices)
                indices, row_weights = sample.indices.to(torch.int32), sample.weights
            sample_ids = sampler.sample_ids
        ctx.save_for_backward(weight, kept, indices, row_weights, sample_ids)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        weight, kept, indices, row_weights, sample_ids = ctx.saved_tensors
        dy = grad_output.reshape(-1, grad_output.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul(dy, weight).view(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            sample = None if indices is None else RowSample(indices.long(), row_weights)
            grad_w = estimate_weight_grad(dy, kept, sample, weight_is_row_major=weight.stride(-1) == 1)
            ctx.sampler.observe(grad_output.reshape(ctx.input_shape[0], -1, grad_output.shape[-1]), sample_ids)
        if ctx.needs_input_grad[2]:
            grad_b = dy.sum(0)
        return grad_x, grad_w, grad_b, None


def sampled_linear(x: Tensor, weight: Tensor, bias: Tensor | None, sampler: RowSampler) -> Tensor:
    """F.linear with a sampled weight gradient. Under autocast, casts like F.linear would."""
    return apply_as_autocast_matmul(SampledLinearFunction, (x, weight, bias), sampler)
