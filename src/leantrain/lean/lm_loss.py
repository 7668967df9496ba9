"""Causal-LM loss that never holds the full logits: LM head + cross-entropy in row chunks, gradients in the forward.

Stock HF causal LMs materialise B×L×V logits and cross-entropy keeps its B×L×V log-softmax for backward; with a
32k vocabulary that dwarfs every other activation. Here the head runs over chunks of rows, each holding about
``chunk_rows`` × V fp32 logits, and the loss's gradients with respect to the hidden states and the head are
computed right there in the forward, as Liger-Kernel's fused linear cross-entropy does: each chunk's logits
exist once, nothing is recomputed, and backward only scales the stored gradients by its upstream gradient.
Three head products a step (logits, ∂hidden, ∂weight), as the stock head's, instead of four when backward
recomputes the logits. What is kept from forward to backward is ∂hidden (the size of the hidden states, which
no longer need keeping) and ∂weight, summed over the chunks in the head's dtype: a 16-bit head's is rounded to
16 bits once per chunk (a few roundings a step), with no fp32 buffer of the head's size.

With z the logits of a row after the model's own transform (logit_transform.py), t its target, ε the label
smoothing and λ the z-loss weight (PaLM's auxiliary λ · log² Z), a row's loss is
lse(z) − (1 − ε) z_t − ε · mean(z) + λ · lse(z)², so ∂/∂z = softmax(z) · (1 + 2λ · lse) − (1 − ε) onehot(t) − ε/V,
as ``F.cross_entropy(label_smoothing=ε)`` gives. Rows whose label is ``IGNORE_INDEX`` (a prompt under SFT's answer
mask, padding) count nothing. Exact within float rounding.

In training with ``labels`` the lean model returns the loss and ``logits=None``; without labels it runs the
stock forward. The loss is computed inside the forward of the head's companion (``LeanLMHead``, sharing the
head's Parameters), never from outside it: FSDP2 unshards a module's weight only in its own forward and
backward, so ``fully_shard(model.lm_head)`` as a unit of its own works. Under autocast the hidden states and the
head are cast to the autocast dtype, as the stock ``lm_head`` would cast them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.autocast import apply_as_autocast_matmul
from leantrain.fp32_matmuls import needs_fp32_product
from leantrain.lean.logit_transform import IDENTITY, LogitTransform
from leantrain.lean.replacement import LeanReplacement

IGNORE_INDEX = -100


@dataclass(frozen=True)
class LossShape:
    """The loss on top of the logits: ``transform`` (the model's own), ``label_smoothing`` ε in [0, 1) and the
    z-loss weight λ >= 0."""

    transform: LogitTransform = IDENTITY
    label_smoothing: float = 0.0
    z_loss: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        if not self.z_loss >= 0:
            raise ValueError(f"z_loss={self.z_loss!r} must be >= 0")


CROSS_ENTROPY = LossShape()  # the plain loss of the model's logits


def _product_hidden(hidden: Tensor, weight: Tensor) -> Tensor:
    """The hidden rows as the logits are computed from them: an fp32 copy where a 16-bit head multiplies in
    fp32 (a CPU without bf16 units, fp32_matmuls.py), else themselves. Made once per forward or backward."""
    return hidden.float() if needs_fp32_product(weight) else hidden


class HeadProducts:
    """A linear head's three products for a chunk of rows, in ``dtype`` (the logits' product dtype: fp32 for a
    16-bit head on a CPU without bf16 units). A head of another dtype is multiplied in vocabulary slices of about
    ``slice_values`` values, each converted on the way, so that no whole converted copy of the head exists."""

    def __init__(self, weight: Tensor, bias: Tensor | None, dtype: torch.dtype, slice_values: int) -> None:
        self.weight, self.bias, self.dtype = weight, bias, dtype
        vocab, width = weight.shape
        step = vocab if weight.dtype == dtype else max(1, slice_values // width)
        self.slices = [slice(start, start + step) for start in range(0, vocab, step)]

    def _converted(self):
        for columns in self.slices:
            yield (columns, self.weight[columns].to(self.dtype),
                   None if self.bias is None else self.bias[columns].to(self.dtype))

    def logits(self, chunk: Tensor) -> Tensor:
        """fp32 (rows, vocabulary) ``chunk @ weightᵀ + bias``."""
        if len(self.slices) == 1:
            return nn.functional.linear(chunk, self.weight.to(self.dtype),
                                        None if self.bias is None else self.bias.to(self.dtype)).float()
        logits = chunk.new_empty((chunk.shape[0], self.weight.shape[0]), dtype=torch.float32)
        for columns, weight, bias in self._converted():
            logits[:, columns] = nn.functional.linear(chunk, weight, bias)
        return logits

    def hidden_gradient(self, grad_logits: Tensor) -> Tensor:
        """``grad_logits @ weight`` (``grad_logits`` in ``dtype``)."""
        total = None
        for columns, weight, _ in self._converted():
            part = grad_logits[:, columns] @ weight
            total = part if total is None else total.add_(part)
        return total

    def add_weight_gradient(self, grad_weight: Tensor, grad_logits: Tensor, chunk: Tensor) -> None:
        """``grad_weight += grad_logitsᵀ @ chunk``, in ``grad_weight``'s dtype (the head's)."""
        for columns in self.slices:
            if grad_weight.dtype == self.dtype:
                grad_weight[columns].addmm_(grad_logits[:, columns].T, chunk)
            else:
                grad_weight[columns] += grad_logits[:, columns].T @ chunk


def _exponentials_(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """exp(z − max z) of each row written over ``logits``, their row sums and the rows' log-normaliser
    log Σ exp z: the softmax is the first over the second, and no temporary of the chunk's size is made
    (``torch.logsumexp`` makes two)."""
    peak = logits.amax(dim=1, keepdim=True)
    exponentials = logits.sub_(peak).exp_()
    sums = exponentials.sum(dim=1)
    return exponentials, sums, sums.log() + peak[:, 0]


def _chunk_loss(products: HeadProducts, chunk: Tensor, index: Tensor, row_weights: Tensor, shape: LossShape,
                gradients: tuple[Tensor | None, Tensor | None, Tensor | None] | None, rows: slice) -> Tensor:
    """The weighted loss of one chunk of rows; with ``gradients`` (the ∂hidden, ∂weight, ∂bias buffers, any None)
    its gradients are written into them. A function of its own so that the chunk's logits are freed on return,
    before the next chunk's exist."""
    smoothing, z_loss, vocab = shape.label_smoothing, shape.z_loss, products.weight.shape[0]
    logits = shape.transform(products.logits(chunk))
    picked = logits.gather(1, index[:, None])[:, 0]
    mean = logits.mean(dim=1) if smoothing else None
    derivative = shape.transform.derivative(logits) if gradients else None
    grad_logits, sums, normaliser = _exponentials_(logits)
    row_loss = normaliser - (1 - smoothing) * picked + z_loss * normaliser.square()
    if smoothing:
        row_loss -= smoothing * mean
    if not gradients:
        return (row_loss * row_weights).sum()
    row_scale = row_weights if isinstance(derivative, Tensor) else row_weights * derivative  # a constant folds in
    grad_logits *= (row_scale * (1 + 2 * z_loss * normaliser) / sums)[:, None]  # the scaled softmax
    grad_logits.scatter_add_(1, index[:, None], ((smoothing - 1) * row_scale)[:, None])
    if smoothing:
        grad_logits -= (smoothing / vocab * row_scale)[:, None]
    if isinstance(derivative, Tensor):
        grad_logits *= derivative
    grad_logits = grad_logits.to(chunk.dtype)  # the products in the product dtype, as the stock head's
    grad_hidden, grad_weight, grad_bias = gradients
    if grad_hidden is not None:
        grad_hidden[rows] = products.hidden_gradient(grad_logits)
    if grad_weight is not None:
        products.add_weight_gradient(grad_weight, grad_logits, chunk)
    if grad_bias is not None:
        grad_bias += grad_logits.sum(0)
    return (row_loss * row_weights).sum()


class FusedLinearCrossEntropyFunction(Function):
    """Summed cross-entropy of ``shape.transform(hidden @ weightᵀ + bias)`` over the counted rows, divided by
    ``divisor``; with ``gradients`` its gradients are computed in this forward, ``chunk_rows`` rows at a time,
    and summed in the head's dtype (a 16-bit head's gradient is rounded once per chunk; no fp32 buffer)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, divisor: Tensor,
                chunk_rows: int, shape: LossShape, gradients: bool) -> Tensor:
        needs = tuple(gradients and need for need in ctx.needs_input_grad[:3])
        product_hidden = _product_hidden(hidden, weight)
        products = HeadProducts(weight, bias, product_hidden.dtype, chunk_rows * weight.shape[0])
        grad_hidden = torch.empty_like(hidden) if needs[0] else None
        grad_weight = torch.zeros_like(weight) if needs[1] else None
        grad_bias = torch.zeros_like(bias) if needs[2] else None
        counted, index = (targets != IGNORE_INDEX), targets.clamp(min=0)
        buffers = (grad_hidden, grad_weight, grad_bias)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            total += _chunk_loss(products, product_hidden[rows], index[rows], counted[rows].float() / divisor,
                                 shape, buffers if any(needs) else None, rows)
        ctx.gradients = (grad_hidden, grad_weight, grad_bias) if any(needs) else None
        return total

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.gradients is None:
            raise RuntimeError("the fused LM-head loss keeps its gradients for one backward only "
                               "(or was computed without gradients: under torch.no_grad)")
        stored, ctx.gradients = ctx.gradients, None
        return (*(None if g is None else g.mul_(grad.to(g.dtype)) for g in stored), None, None, None, None, None)


def chunked_causal_lm_loss(hidden: Tensor, head: nn.Module, labels: Tensor, chunk_rows: int,
                           num_items_in_batch: Tensor | int | None = None, shape: LossShape = CROSS_ENTROPY) -> Tensor:
    """HF's ``ForCausalLMLoss`` (shift by one, ignore -100, mean over counted tokens or divide by
    ``num_items_in_batch``) on ``shape.transform(head(hidden))``, chunk by chunk, its gradients computed now
    when autograd is on. Call it inside ``head``'s forward."""
    targets = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1).to(hidden.device)
    divisor = (targets != IGNORE_INDEX).sum() if num_items_in_batch is None else num_items_in_batch
    divisor = torch.as_tensor(divisor, device=hidden.device)
    return apply_as_autocast_matmul(FusedLinearCrossEntropyFunction,
                                    (hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias),
                                    targets, divisor, chunk_rows, shape, torch.is_grad_enabled())


class LeanLMHead(LeanReplacement):
    """Drop-in for a causal LM's ``nn.Linear`` head: ``head(hidden)`` gives the logits as before (the raw ones;
    the model applies its own transform), ``head(hidden, labels=...)`` the fused loss of ``shape``, read from this
    module's own weight."""

    def __init__(self, original: nn.Linear, chunk_rows: int, shape: LossShape = CROSS_ENTROPY) -> None:
        super().__init__(original)
        self.weight, self.bias = original.weight, original.bias
        self.in_features, self.out_features, self.chunk_rows = original.in_features, original.out_features, chunk_rows
        self.shape = shape

    def forward(self, hidden: Tensor, labels: Tensor | None = None,
                num_items_in_batch: Tensor | int | None = None) -> Tensor:
        if labels is None:
            return nn.functional.linear(hidden, self.weight, self.bias)
        return chunked_causal_lm_loss(hidden, self, labels, self.chunk_rows, num_items_in_batch, self.shape)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"fused loss in chunks of {self.chunk_rows} rows, {self.shape}")


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
