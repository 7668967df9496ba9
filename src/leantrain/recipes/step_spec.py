"""``StepSpec``: a picklable description of one training step, rebuilt in a fresh process.

This is how the CPU peak measurement gets a large model into its subprocess without pickling
weights: the child builds the model from its name, applies the same conversions, draws the same
batch, and makes the same optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leantrain.memory.options import MemoryOptions
from leantrain.names import OPTIMIZERS
from leantrain.optim.factory import build_optimizer


def make_optimizer(name: str | None, model: nn.Module, lr: float = 1e-4, rank: int | None = None,
                   state_bits: int = 32) -> torch.optim.Optimizer | None:
    """Any of ``leantrain.names.OPTIMIZERS`` (AdamW, SGD, the low-rank ones at ``rank``) by name, with
    ``state_bits``-bit moments; None: no optimizer."""
    return None if name is None else build_optimizer(name, model, lr=lr, rank=rank, state_bits=state_bits)


@dataclass(frozen=True)
class StepSpec:
    """Model name or folder, batch shape, optimizer, and conversions applied in order (picklable
    callables taking the model, e.g. ``functools.partial(apply_lean, config=LeanConfig())``).
    ``step_in_backward``: the optimizer steps inside backward (optim/in_backward.py), so the step's
    ``optimizer.step()`` afterwards finds no gradient and does nothing."""

    model: str
    batch_size: int
    seq_len: int
    optimizer: str | None = "adamw"  # None: forward and backward only
    conversions: tuple[Callable[[nn.Module], object], ...] = ()
    seed: int = 0
    rank: int | None = None  # of a low-rank optimizer; None: its default
    state_bits: int = 32
    step_in_backward: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} or None, got {self.optimizer!r}")
        if self.step_in_backward and self.optimizer is None:
            raise ValueError("step_in_backward needs an optimizer to step")

    def __call__(self) -> tuple[nn.Module, dict[str, Tensor], torch.optim.Optimizer | None]:
        from leantrain.models.presets import build_model, random_batch

        model = build_model(self.model, self.seed)
        for convert in self.conversions:
            convert(model)
        optimizer = make_optimizer(self.optimizer, model, rank=self.rank, state_bits=self.state_bits)
        if self.step_in_backward:
            from leantrain.optim.in_backward import StepInBackward

            StepInBackward(model, optimizer)  # the hooks live on the parameters
        return model, random_batch(model, self.batch_size, self.seq_len, self.seed), optimizer

    @classmethod
    def of(cls, model: str, batch_size: int, seq_len: int, options: MemoryOptions, seed: int = 0) -> StepSpec:
        """The step of ``model`` with every part of ``options``."""
        return cls(model, batch_size, seq_len, options.optimizer, options.conversions(), seed, options.rank,
                   options.state_bits, options.step_in_backward)
