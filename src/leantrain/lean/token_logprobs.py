"""Per-token log-probabilities and entropies of a causal LM that never hold the B×L×V logits.

RL objectives (GRPO's policy ratio, TRL's ``_get_per_token_logps_and_entropies``) and an entropy
bonus need, per token, log p(target) and the softmax entropy H. Taken from full logits they cost
B×L×V floats, plus the log-softmax autograd keeps. Here the head runs in row chunks: forward keeps
only the hidden states, the targets and the per-row log-sum-exp; backward recomputes each chunk's
logits. A chunk holds ``LOGITS_BYTES`` of fp32 logits unless ``chunk_rows`` says otherwise (its backward
holds about four such arrays). With z the logits of a row (divided by the temperature), p = softmax(z),
log p(t) = z_t − logsumexp(z) and H = logsumexp(z) − Σ p z, so
∂ log p(t)/∂z = onehot(t) − p and ∂H/∂z = −p ⊙ (log p + H). Exact within float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from leantrain.autocast import apply_as_autocast_matmul
from leantrain.lean.lm_loss import LeanLMHead
from leantrain.lean.logit_transform import IDENTITY, LogitTransform, logit_transform
from leantrain.validation import is_positive_int

LOGITS_BYTES = 64 * 2**20  # fp32 logits of one chunk: 341 rows at SmolLM2's 49,152 tokens, 128 at Llama 3's 128,256


def rows_for_logits_bytes(vocab_size: int, logits_bytes: int = LOGITS_BYTES) -> int:
    """Rows whose fp32 logits over ``vocab_size`` tokens fit ``logits_bytes`` (at least one)."""
    return max(1, logits_bytes // (4 * vocab_size))


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


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, transform: LogitTransform) -> Tensor:
    """The model's fp32 logits of the rows ``hidden``: ``transform`` of the head's output."""
    return transform(nn.functional.linear(hidden, weight, bias).float())


class ChunkedTokenLogprobsFunction(Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int,
                temperature: float, transform: LogitTransform) -> tuple[Tensor, Tensor]:
        logprobs = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        entropy = torch.empty_like(logprobs)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = _logits(hidden[rows], weight, bias, transform) / temperature
            normaliser = torch.logsumexp(logits, dim=-1)
            logprobs[rows] = logits.gather(1, targets[rows, None])[:, 0] - normaliser
            entropy[rows] = normaliser - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, entropy)
        ctx.chunk_rows, ctx.temperature, ctx.transform = chunk_rows, temperature, transform
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: Tensor | None, grad_entropy: Tensor | None):
        hidden, weight, bias, targets, entropy = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden)
        grad_weight, grad_bias = head_gradients(weight, bias, ctx.needs_input_grad)
        for start in range(0, hidden.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            logits = _logits(hidden[rows], weight, bias, ctx.transform)
            log_p = torch.log_softmax(logits / ctx.temperature, dim=-1)
            p = log_p.exp()
            grad_logits = torch.zeros_like(p)
            if grad_logprobs is not None:
                g = grad_logprobs[rows].float()
                grad_logits -= p * g[:, None]
                grad_logits.scatter_add_(1, targets[rows, None], g[:, None])
            if grad_entropy is not None:
                grad_logits -= p * (log_p + entropy[rows, None]) * grad_entropy[rows].float()[:, None]
            grad_logits *= ctx.transform.derivative(logits) / ctx.temperature
            grad_hidden[rows] = backward_through_head(grad_logits, hidden[rows], weight, grad_weight, grad_bias)
        return (grad_hidden, *head_results(grad_weight, grad_bias, weight, bias), None, None, None, None)


def chunked_token_logprobs(hidden: Tensor, head: nn.Module, targets: Tensor, chunk_rows: int | None = None,
                           temperature: float = 1.0,
                           transform: LogitTransform = IDENTITY) -> tuple[Tensor, Tensor]:
    """(log p(targets), entropy) of ``transform(head(hidden)) / temperature``, shaped like ``targets``;
    ``hidden`` is ``targets.shape + (hidden_size,)``. ``head`` is a linear layer (its ``weight`` and ``bias``);
    ``chunk_rows`` None: ``rows_for_logits_bytes`` of its output size."""
    chunk_rows = rows_for_logits_bytes(head.weight.shape[0]) if chunk_rows is None else chunk_rows
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden of shape {tuple(hidden.shape)} does not match targets of shape "
                         f"{tuple(targets.shape)} (hidden must be targets.shape + (hidden_size,))")
    if not is_positive_int(chunk_rows):
        raise ValueError(f"chunk_rows={chunk_rows!r} must be an integer >= 1")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    flat = targets.reshape(-1).to(hidden.device)
    logprobs, entropy = apply_as_autocast_matmul(ChunkedTokenLogprobsFunction,
                                                 (hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias),
                                                 flat, chunk_rows, temperature, transform)
    return logprobs.view(targets.shape), entropy.view(targets.shape)


def token_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                   chunk_rows: int | None = None, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-token (log p, entropy) of a HF causal LM whose logits come from a linear head (then the model's own
    scaling or soft-capping, logit_transform.py): position i scores ``input_ids[:, i + 1]``, so both have shape
    (B, L − 1), as ``log_softmax(logits[:, :-1])`` gathered at ``input_ids[:, 1:]`` would give, without the
    B×L×V logits.

    ``model`` may be wrapped (DDP, FSDP2): the call goes through the wrapper, with the inner model's forward
    swapped for its body + the chunked head (the head's forward swapped for the log-probs) for its duration, so
    that DDP's gradient hooks and FSDP2's parameter gathering see an ordinary forward."""
    inner = getattr(model, "module", model)  # DDP keeps the model as .module; FSDP2 works in place
    head = inner.get_output_embeddings()
    transform = head.shape.transform if isinstance(head, LeanLMHead) else logit_transform(inner)
    if transform is None:
        raise ValueError(f"{type(inner).__name__} has no linear LM head (logits = lm_head(hidden), then the "
                         "model's scaling or soft-capping); its token log-probs need its own logits")

    def scores(hidden: Tensor, *args, **kwargs) -> Tensor:
        logprobs, entropy = chunked_token_logprobs(hidden[:, :-1], head, input_ids[:, 1:], chunk_rows, temperature,
                                                   transform)
        return torch.stack([logprobs, entropy], dim=-1)

    def body_and_head(**inputs) -> Tensor:
        return head(inner.base_model(**inputs)[0])

    own_forward = inner.__dict__.get("forward")  # the lean forward of apply_lean, if any
    inner.forward, head.forward = body_and_head, scores  # instance attributes shadow the classes' forwards
    try:
        both = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        del head.forward
        if own_forward is None:
            del inner.forward
        else:
            inner.forward = own_forward
    return both[..., 0], both[..., 1]
