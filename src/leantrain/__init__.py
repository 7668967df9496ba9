"""leantrain: train transformer language models in less memory and with fewer hand-tuned knobs."""

__version__ = "0.1.0"

from leantrain import optim, schedules
from leantrain.lean import LeanConfig, apply_lean, lean_modules, remove_lean
from leantrain.memory import MemoryReport, measure_memory
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
