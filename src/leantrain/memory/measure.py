"""``measure_memory``: the whole memory picture of one training step of a model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from leantrain.memory.peak import Step, cpu_peak_in_subprocess, cpu_peak_of_objects, cuda_peak
from leantrain.memory.report import MemoryReport
from leantrain.memory.saved_tensors import SavedBytes, track_saved_tensors
from leantrain.memory.state_bytes import (
    batch_bytes,
    buffer_bytes,
    gradient_bytes,
    optimizer_state_bytes,
    parameter_bytes,
)
from leantrain.memory.step import check_batch, training_step


def measure_memory(
    model: nn.Module,
    batch: dict[str, Tensor] | Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    peak: bool = True,
    peak_builder: Callable[[], Step] | None = None,
) -> MemoryReport:
    """Run one real training step of ``model`` on ``batch`` (a dict of keyword tensors with
    ``labels`` for a HF model, or one tensor whose output is summed) and report its memory.

    Like any training step it leaves gradients on the parameters and, with ``optimizer``,
    updates them. With ``peak``, the peak is measured around this step on CUDA; on CPU a fresh
    subprocess runs the same step, built by ``peak_builder`` (a picklable callable returning
    ``(model, batch, optimizer)``) or, without one, from a pickled copy of the objects taken
    before the step.
    """
    check_batch(batch)
    device = next(iter(model.parameters()), torch.empty(0)).device
    measured = None
    if peak and device.type == "cpu":
        measured = (cpu_peak_in_subprocess(peak_builder) if peak_builder is not None
                    else cpu_peak_of_objects(model, batch, optimizer))
    saved = SavedBytes()
    losses: list[float] = []

    def step() -> None:
        losses.append(training_step(model, batch, optimizer, track_saved_tensors(model, saved)))

    if peak and device.type == "cuda":
        measured = cuda_peak(step, device)
    else:
        step()
    return MemoryReport(
        model_type=type(model).__name__,
        loss=losses[0],
        saved=saved,
        parameter_bytes=parameter_bytes(model),
        trainable_parameter_bytes=parameter_bytes(model, trainable_only=True),
        buffer_bytes=buffer_bytes(model),
        gradient_bytes=gradient_bytes(model),
        optimizer_state_bytes=optimizer_state_bytes(optimizer),
        batch_bytes=batch_bytes(batch),
        peak=measured,
    )
