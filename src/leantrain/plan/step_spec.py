"""``StepSpec``: a picklable description of one training step, rebuilt in a fresh process.

This is how the CPU peak measurement gets a large model into its subprocess without pickling
weights: the child builds the model from its name, applies the same memory parts, draws the same
batch, and makes the same optimizer (stepping in backward when the optimizer section says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from leantrain.config import MemoryOptions, OptimConfig

STEP_LR = 1e-4  # the learning rate of a measured step whose optimizer section leaves it to a recipe


@dataclass(frozen=True)
class StepSpec:
    """Model name or folder, batch shape, the memory section and the optimizer section (None: forward and
    backward only); the model is built in the optimizer section's weights dtype."""

    model: str
    batch_size: int
    seq_len: int
    optim: OptimConfig | None = field(default_factory=OptimConfig)
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.optim is not None and not isinstance(self.optim, OptimConfig):
            raise ValueError(f"optim must be an OptimConfig or None, got {self.optim!r}")

    def warm(self) -> None:
        """Import what building the model takes (it is built on the meta device), before memory is measured."""
        from leantrain.models.presets import meta_model

        meta_model(self.model)
        self.memory.conversions()  # imports the parts' code

    def __call__(self) -> tuple[nn.Module, dict[str, Tensor], torch.optim.Optimizer | None]:
        from leantrain.fp32_matmuls import prefer_fp32_matmuls_
        from leantrain.models.presets import build_model, random_batch

        model = build_model(self.model, self.seed, "float32" if self.optim is None else self.optim.dtype)
        self.memory.apply(model)
        prefer_fp32_matmuls_(model)  # as the engine does
        optimizer = None
        if self.optim is not None:
            optimizer = replace(self.optim, lr=self.optim.lr or STEP_LR).build(model, seed=self.seed)
            if self.optim.step_in_backward:
                from leantrain.optim.in_backward import StepInBackward

                StepInBackward(model, optimizer)  # the hooks live on the parameters; the step's step() finds no grad
        return model, random_batch(model, self.batch_size, self.seq_len, self.seed), optimizer
