"""One full training step: forward, loss, backward, optimizer step."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from leantrain.memory.saved_tensors import run_forward


def loss_of(output: object) -> Tensor:
    """The loss of a model output: a HF output's ``.loss``, or a plain tensor output summed."""
    if isinstance(output, Tensor):
        return output.sum()
    loss = getattr(output, "loss", None)
    if loss is None:
        raise ValueError("the model returned no loss: a HF model needs `labels` in the batch")
    return loss


def check_batch(batch: object) -> None:
    if isinstance(batch, Tensor):
        return
    if not isinstance(batch, dict) or not batch or not all(isinstance(v, Tensor) for v in batch.values()):
        raise ValueError(f"batch must be a tensor or a non-empty dict of tensors, got {type(batch).__name__}")


def training_step(
    model: nn.Module,
    batch: dict[str, Tensor] | Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    forward_context: AbstractContextManager | None = None,
) -> float:
    """Forward (inside ``forward_context``, e.g. a saved-tensor tracker), backward, optimizer step.
    Gradients are left on the parameters, as after ``loss.backward()``. Returns the loss."""
    check_batch(batch)
    with torch.enable_grad(), forward_context or nullcontext():
        loss = loss_of(run_forward(model, batch))
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    return loss.item()
