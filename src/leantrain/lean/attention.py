"""Attention that keeps Q, K, V and a seed, not the L×L probabilities, dropout mask and dropped
probabilities that HF's eager attention keeps; backward recomputes them (as flash-attention does).

Plugged into stock HF models through their own extension point: the function is registered in
``transformers.AttentionInterface`` (with HF's eager additive mask) under ``LEAN_ATTENTION`` and
selected with ``config._attn_implementation``. Exact: the recomputed probabilities are
bit-identical to the forward ones, the dropout mask is regenerated from its seed; gradients equal
eager attention's within float rounding. Grouped-query attention keeps K and V unrepeated. Under
autocast Q, K and V are cast to the autocast dtype first, where eager's matmuls would cast them
(HF's rotary embedding leaves Q and K in fp32 and V in bf16), so backward sees one dtype. bf16
products on a CPU without bf16 units run in fp32 (fp32_matmuls.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.autocast import apply_as_autocast_matmul
from leantrain.fp32_matmuls import matmul
from leantrain.lean.dropout import draw_seed, dropout_mask, dropout_scale

LEAN_ATTENTION = "leantrain_recompute"


def _repeat_heads(t: Tensor, groups: int) -> Tensor:
    """(B, H_kv, L, d) -> (B, H_kv * groups, L, d), as HF's ``repeat_kv``."""
    if groups == 1:
        return t
    b, heads, length, dim = t.shape
    return t[:, :, None].expand(b, heads, groups, length, dim).reshape(b, heads * groups, length, dim)


def _sum_heads(t: Tensor, groups: int) -> Tensor:
    """Gradient of ``_repeat_heads``."""
    if groups == 1:
        return t
    b, heads, length, dim = t.shape
    return t.view(b, heads // groups, groups, length, dim).sum(2)


def _probabilities(query: Tensor, key: Tensor, bias: Tensor | None, mask: Tensor | None, scaling: float,
                   groups: int) -> Tensor:
    scores = matmul(query, _repeat_heads(key, groups).transpose(2, 3)) * scaling
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


class RecomputedAttentionFunction(Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, mask: Tensor | None,
                seed: Tensor, scaling: float, dropout: float, groups: int) -> Tensor:
        probs = _probabilities(query, key, bias, mask, scaling, groups)
        if dropout > 0:
            probs = probs * dropout_mask(probs.shape, dropout, seed, probs.device) * dropout_scale(dropout)
        ctx.save_for_backward(query, key, value, bias, mask, seed)
        ctx.scaling, ctx.dropout, ctx.groups = scaling, dropout, groups
        return matmul(probs, _repeat_heads(value, groups))

    @staticmethod
    def backward(ctx, grad: Tensor):
        query, key, value, bias, mask, seed = ctx.saved_tensors
        groups = ctx.groups
        probs = _probabilities(query, key, bias, mask, ctx.scaling, groups)
        kept = probs
        if ctx.dropout > 0:
            keep = dropout_mask(probs.shape, ctx.dropout, seed, probs.device)
            kept = probs * keep * dropout_scale(ctx.dropout)
        grad_value = _sum_heads(matmul(kept.transpose(2, 3), grad), groups)
        grad_probs = matmul(grad, _repeat_heads(value, groups).transpose(2, 3))
        if ctx.dropout > 0:
            grad_probs = grad_probs * keep * dropout_scale(ctx.dropout)
        grad_biased_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_bias = grad_biased_scores.sum_to_size(bias.shape) if ctx.needs_input_grad[3] else None  # T5's learnt one
        grad_mask = grad_biased_scores.sum_to_size(mask.shape) if ctx.needs_input_grad[4] else None
        grad_scores = grad_biased_scores * ctx.scaling
        grad_query = matmul(grad_scores, _repeat_heads(key, groups))
        grad_key = _sum_heads(matmul(grad_scores.transpose(2, 3), query), groups)
        return grad_query, grad_key, grad_value, grad_bias, grad_mask, None, None, None, None


def recomputed_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    position_bias: Tensor | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Same contract as HF's ``eager_attention_forward`` (B, H, L, d inputs; (B, L, H, d) output;
    T5's additive ``position_bias``); attention weights are not returned (``output_attentions``
    needs eager)."""
    for unsupported in ("softcap", "s_aux", "sinks"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(f"the lean attention does not support {unsupported} (its model's attention is kept "
                             "eager when apply_lean sees the term in the config; this one passed it at run time): "
                             "train without the lean companions (--no-lean)")
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = torch.zeros_like(attention_mask, dtype=query.dtype).masked_fill(
            ~attention_mask, torch.finfo(query.dtype).min)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    groups = query.shape[1] // key.shape[1]
    output = apply_as_autocast_matmul(RecomputedAttentionFunction, (query, key, value), position_bias, attention_mask,
                                      draw_seed(), scaling, dropout if module.training else 0.0, groups)
    return output.transpose(1, 2).contiguous(), None


class SwappedAttention:
    """What ``apply_lean`` changed: (HF config, previous ``_attn_implementation``) pairs, kept on the
    model for ``remove_lean``. Unpickling it registers ``LEAN_ATTENTION`` again, so a lean model
    loaded in a fresh process (e.g. the CPU peak subprocess) finds its attention function."""

    def __init__(self, previous: list[tuple[object, str]]) -> None:
        self.previous = previous

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        register_lean_attention()


def register_lean_attention() -> None:
    """Make ``LEAN_ATTENTION`` a valid ``attn_implementation`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(LEAN_ATTENTION, recomputed_attention_forward)
    AttentionMaskInterface.register(LEAN_ATTENTION, eager_mask)
