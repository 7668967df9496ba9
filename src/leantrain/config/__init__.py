"""Configs, torch-free: the sections every recipe config holds (``EngineConfig``, ``OptimConfig``,
``MemoryOptions``) and the recipe configs made of their own fields plus those sections.

The command line generates its flags from these fields (cli/flags.py), so it can read them without
importing torch.
"""

from dataclasses import replace
from typing import Any

from leantrain.config.engine import EngineConfig
from leantrain.config.memory import MemoryOptions
from leantrain.config.optim import OptimConfig


def describe_parts(memory: MemoryOptions, optim: OptimConfig) -> str:
    """One line: the memory parts and the optimizer ("LoRA r16 + checkpointing (layers) + adamw 8-bit")."""
    return f"{memory.describe()} + {optim.describe()}"


def seeded_sampling(config: Any) -> dict[str, MemoryOptions]:
    """What every recipe config derives for its memory section: sampled layers without a seed of their own
    draw from the run's seed (``engine.seed``), so that a run and its resume draw the same rows."""
    sampling = config.memory.sampling
    if sampling is None or sampling.seed is not None:
        return {}
    return {"memory": replace(config.memory, sampling=replace(sampling, seed=config.engine.seed))}


__all__ = ["EngineConfig", "MemoryOptions", "OptimConfig", "describe_parts", "seeded_sampling"]
