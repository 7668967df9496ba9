"""Causal-LM loss that never holds the full logits: LM head + cross-entropy in vocabulary slices.

Stock HF causal LMs materialise B×L×V logits and cross-entropy keeps its B×L×V log-softmax for
backward; with a 32k vocabulary that dwarfs every other activation. The fused function keeps
only the final hidden states (already kept by the final norm), the targets and one log-normaliser a
row, and recomputes each slice's logits in backward (as Apple's Cut Cross-Entropy does; Liger-Kernel's
fused linear cross-entropy chunks rows instead, which needs a full-vocabulary fp32 accumulator for the
weight gradient of a 16-bit head). A slice holds as many logits as ``chunk_rows`` whole rows would. Exact
within float rounding. In training with ``labels`` the lean model
returns the loss and ``logits=None``; without labels it runs the stock forward.

The loss is computed inside the forward of the head's companion (``LeanLMHead``, sharing the head's
Parameters), never from outside it: FSDP2 unshards a module's weight only in its own forward and
backward, so ``fully_shard(model.lm_head)`` as a unit of its own works. Under autocast the hidden
states and the head are cast to the autocast dtype, as the stock ``lm_head`` would cast them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.autocast import apply_as_autocast_matmul
from leantrain.fp32_matmuls import needs_fp32_product
from leantrain.lean.replacement import LeanReplacement

IGNORE_INDEX = -100


def _product_hidden(hidden: Tensor, weight: Tensor) -> Tensor:
    """The hidden rows as the logits are computed from them: an fp32 copy where a 16-bit head multiplies in
    fp32 (a CPU without bf16 units, fp32_matmuls.py), else themselves. Made once per forward or backward."""
    return hidden.float() if needs_fp32_product(weight) else hidden


def _slice_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, columns: slice) -> tuple[Tensor, Tensor]:
    """(fp32 logits of the vocabulary slice ``columns`` of rows ``hidden`` from :func:`_product_hidden`, the
    slice's weight as multiplied)."""
    weight, bias = weight[columns], None if bias is None else bias[columns]
    if hidden.dtype != weight.dtype:  # an fp32 product of a 16-bit head
        weight, bias = weight.float(), None if bias is None else bias.float()
    return nn.functional.linear(hidden, weight, bias).float(), weight


def vocabulary_slice(chunk_rows: int, rows: int, vocab: int) -> int:
    """Vocabulary entries per slice: a slice's logits (``rows`` × entries) hold as many values as a chunk of
    ``chunk_rows`` whole rows would."""
    return max(1, min(vocab, chunk_rows * vocab // max(rows, 1)))


def head_gradients(weight: Tensor, bias: Tensor | None, needs: tuple[bool, ...]) -> tuple[Tensor | None, Tensor | None]:
    """fp32 accumulators of the head's weight and bias gradients, or None where not needed
    (``needs``: the Function's ``ctx.needs_input_grad`` for (hidden, weight, bias, …))."""
    return (torch.zeros_like(weight, dtype=torch.float32) if needs[1] else None,
            torch.zeros_like(bias, dtype=torch.float32) if needs[2] else None)


def backward_through_head(grad_logits: Tensor, hidden: Tensor, weight: Tensor, grad_weight: Tensor | None,
                          grad_bias: Tensor | None) -> Tensor:
    """One chunk of a linear head's backward: adds the chunk's weight and bias gradients to the
    accumulators and returns the gradient of its hidden rows."""
    if grad_weight is not None:
        grad_weight += grad_logits.T @ hidden.float()
    if grad_bias is not None:
        grad_bias += grad_logits.sum(0)
    return (grad_logits @ weight.float()).to(hidden.dtype)


def head_results(grad_weight: Tensor | None, grad_bias: Tensor | None, weight: Tensor,
                 bias: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    return (None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype))


class ChunkedLinearCrossEntropyFunction(Function):
    """Cross-entropy of ``hidden @ weightᵀ + bias`` over slices of the vocabulary: the log-normaliser online
    (a running maximum and sum, as flash-attention's softmax), each slice's weight gradient written once in
    the weight's dtype, so no full-vocabulary buffer exists (not even an fp32 gradient of a 16-bit head)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, divisor: Tensor,
                chunk_rows: int) -> Tensor:
        rows, vocab = hidden.shape[0], weight.shape[0]
        step = vocabulary_slice(chunk_rows, rows, vocab)
        peak = hidden.new_full((rows,), float("-inf"), dtype=torch.float32)
        total = hidden.new_zeros((rows,), dtype=torch.float32)
        picked = hidden.new_zeros((rows,), dtype=torch.float32)
        index, product_hidden = targets.clamp(min=0), _product_hidden(hidden, weight)
        for start in range(0, vocab, step):
            logits, _ = _slice_logits(product_hidden, weight, bias, slice(start, start + step))
            higher = torch.maximum(peak, logits.amax(dim=1))
            total = total * torch.exp(peak - higher) + torch.exp(logits - higher[:, None]).sum(dim=1)
            peak = higher
            inside = (index >= start) & (index < start + logits.shape[1])
            picked += logits.gather(1, (index - start).clamp(0, logits.shape[1] - 1)[:, None])[:, 0] * inside
        normaliser = peak + total.log()
        ctx.save_for_backward(hidden, weight, bias, targets, divisor, normaliser)
        ctx.step = step
        return ((normaliser - picked) * (targets != IGNORE_INDEX)).sum() / divisor

    @staticmethod
    def backward(ctx, grad: Tensor):
        hidden, weight, bias, targets, divisor, normaliser = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if needs[0] else None
        grad_weight = torch.empty_like(weight) if needs[1] else None
        grad_bias = torch.empty_like(bias) if needs[2] else None
        index, scale = targets.clamp(min=0), (targets != IGNORE_INDEX) * (grad / divisor)
        product_hidden = _product_hidden(hidden, weight)
        wide_hidden = product_hidden.float()  # the weight gradient's fp32 operand, once
        for start in range(0, weight.shape[0], ctx.step):
            columns = slice(start, start + ctx.step)
            logits, sliced = _slice_logits(product_hidden, weight, bias, columns)
            grad_logits = torch.exp(logits - normaliser[:, None])  # the softmax of this slice
            inside = (index >= start) & (index < start + logits.shape[1])
            grad_logits.scatter_add_(1, (index - start).clamp(0, logits.shape[1] - 1)[:, None],
                                     -inside.to(grad_logits.dtype)[:, None])
            grad_logits *= scale[:, None]
            if grad_hidden is not None:
                grad_hidden += grad_logits @ sliced.float()
            if grad_weight is not None:
                grad_weight[columns] = grad_logits.T @ wide_hidden
            if grad_bias is not None:
                grad_bias[columns] = grad_logits.sum(0)
        return (None if grad_hidden is None else grad_hidden.to(hidden.dtype), grad_weight, grad_bias,
                None, None, None)


def chunked_causal_lm_loss(hidden: Tensor, head: nn.Module, labels: Tensor, chunk_rows: int,
                           num_items_in_batch: Tensor | int | None = None) -> Tensor:
    """HF's ``ForCausalLMLoss`` (shift by one, ignore -100, mean over counted tokens or divide by
    ``num_items_in_batch``) on ``head(hidden)``, chunk by chunk. Call it inside ``head``'s forward."""
    targets = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1).to(hidden.device)
    divisor = (targets != IGNORE_INDEX).sum() if num_items_in_batch is None else num_items_in_batch
    divisor = torch.as_tensor(divisor, device=hidden.device)
    return apply_as_autocast_matmul(ChunkedLinearCrossEntropyFunction,
                                    (hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias),
                                    targets, divisor, chunk_rows)


class LeanLMHead(LeanReplacement):
    """Drop-in for a causal LM's ``nn.Linear`` head: ``head(hidden)`` gives the logits as before,
    ``head(hidden, labels=...)`` the chunked loss, read from this module's own weight."""

    def __init__(self, original: nn.Linear, chunk_rows: int) -> None:
        super().__init__(original)
        self.weight, self.bias = original.weight, original.bias
        self.in_features, self.out_features, self.chunk_rows = original.in_features, original.out_features, chunk_rows

    def forward(self, hidden: Tensor, labels: Tensor | None = None,
                num_items_in_batch: Tensor | int | None = None) -> Tensor:
        if labels is None:
            return nn.functional.linear(hidden, self.weight, self.bias)
        return chunked_causal_lm_loss(hidden, self, labels, self.chunk_rows, num_items_in_batch)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"chunked loss of {self.chunk_rows} rows")


def lean_causal_lm_forward(model: nn.Module, *args, labels: Tensor | None = None, **kwargs):
    """``model.forward`` of a HF causal LM whose head is a ``LeanLMHead``: the chunked loss when
    training with labels, else the stock forward."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    if labels is None or not torch.is_grad_enabled():
        return type(model).forward(model, *args, labels=labels, **kwargs)
    num_items = kwargs.pop("num_items_in_batch", None)
    kwargs.pop("logits_to_keep", None)
    outputs = model.base_model(*args, **kwargs)
    loss = model.get_output_embeddings()(outputs[0], labels=labels, num_items_in_batch=num_items)
    return CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=getattr(outputs, "past_key_values", None),
                                  hidden_states=getattr(outputs, "hidden_states", None),
                                  attentions=getattr(outputs, "attentions", None))


def _class(module: nn.Module) -> type:
    """The module's own class: under FSDP2, ``fully_shard`` swaps in a subclass named ``FSDP<class>``."""
    from torch.distributed.fsdp import FSDPModule

    return type(module).__mro__[2] if isinstance(module, FSDPModule) else type(module)


def has_plain_lm_head(model: nn.Module) -> bool:
    """A HF causal LM whose logits are just ``lm_head(hidden)`` (no soft-capping or scaling)."""
    if not _class(model).__name__.endswith(("ForCausalLM", "LMHeadModel")) or model.base_model is model:
        return False
    config = model.config
    return (_class(model.get_output_embeddings()) is nn.Linear
            and getattr(config, "final_logit_softcapping", None) is None
            and getattr(config, "logit_scale", None) is None)
