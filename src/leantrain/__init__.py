"""leantrain: train transformer language models in less memory and with fewer hand-tuned knobs.

Names are imported on first use (PEP 562), so ``import leantrain`` and ``leantrain --help`` do not
import torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leantrain.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it ("" for a subpackage of the same name)
_EXPORTS = {
    "optim": "",
    "schedules": "",
    "EngineConfig": "leantrain.config",
    "MemoryOptions": "leantrain.config",
    "OptimConfig": "leantrain.config",
    "prepare": "leantrain.config.memory",
    "apply_lora": "leantrain.models.lora",
    "LeanConfig": "leantrain.lean",
    "apply_lean": "leantrain.lean",
    "apply_checkpointing": "leantrain.lean.checkpointing",
    "lean_modules": "leantrain.lean",
    "remove_lean": "leantrain.lean",
    "MemoryReport": "leantrain.memory",
    "measure_memory": "leantrain.memory",
    "SampledLinear": "leantrain.sampling",
    "SamplingConfig": "leantrain.sampling",
    "apply_sampling": "leantrain.sampling",
    "exact_gradients": "leantrain.sampling",
    "load_sampling_state_dict": "leantrain.sampling",
    "remove_sampling": "leantrain.sampling",
    "sample_ids": "leantrain.sampling",
    "sampled_layers": "leantrain.sampling",
    "sampling_state_dict": "leantrain.sampling",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from leantrain import optim, schedules
    from leantrain.config import EngineConfig, MemoryOptions, OptimConfig
    from leantrain.config.memory import prepare
    from leantrain.lean import LeanConfig, apply_lean, lean_modules, remove_lean
    from leantrain.lean.checkpointing import apply_checkpointing
    from leantrain.memory import MemoryReport, measure_memory
    from leantrain.models.lora import apply_lora
    from leantrain.sampling import (
        SampledLinear,
        SamplingConfig,
        apply_sampling,
        exact_gradients,
        load_sampling_state_dict,
        remove_sampling,
        sample_ids,
        sampled_layers,
        sampling_state_dict,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
