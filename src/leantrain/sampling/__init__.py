"""Sampled-activation backprop: linear layers that keep a sub-sample of their input rows for dW."""

from leantrain.module_names import find_targets
from leantrain.sampling.config import SamplingConfig
from leantrain.sampling.estimators import METHODS, RowSample, expected_squared_error, sample_rows
from leantrain.sampling.importance import SOURCES
from leantrain.sampling.layers import SampledLinear
from leantrain.sampling.surgery import (
    apply_sampling,
    exact_gradients,
    load_sampling_state_dict,
    remove_sampling,
    sample_ids,
    sampled_layers,
    sampling_state_dict,
)

__all__ = [
    "METHODS",
    "SOURCES",
    "RowSample",
    "SampledLinear",
    "SamplingConfig",
    "apply_sampling",
    "exact_gradients",
    "expected_squared_error",
    "find_targets",
    "load_sampling_state_dict",
    "remove_sampling",
    "sample_ids",
    "sample_rows",
    "sampled_layers",
    "sampling_state_dict",
]
