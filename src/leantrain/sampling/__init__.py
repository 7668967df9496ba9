"""Sampled-activation backprop: linear layers that keep a sub-sample of their input rows for dW.

Names are imported on first use (PEP 562), so that ``leantrain.sampling.config`` (torch-free) can be
read by the command line without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leantrain.lazy import lazy_exports

# public name -> the module that defines it
_EXPORTS = {
    "METHODS": "leantrain.names",
    "SOURCES": "leantrain.names",
    "SamplingConfig": "leantrain.sampling.config",
    "RowSample": "leantrain.sampling.estimators",
    "expected_squared_error": "leantrain.sampling.estimators",
    "sample_rows": "leantrain.sampling.estimators",
    "SampledLinear": "leantrain.sampling.layers",
    "find_targets": "leantrain.module_names",
    "apply_sampling": "leantrain.sampling.surgery",
    "exact_gradients": "leantrain.sampling.surgery",
    "load_sampling_state_dict": "leantrain.sampling.surgery",
    "remove_sampling": "leantrain.sampling.surgery",
    "sample_ids": "leantrain.sampling.surgery",
    "sampled_layers": "leantrain.sampling.surgery",
    "sampling_state_dict": "leantrain.sampling.surgery",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from leantrain.module_names import find_targets
    from leantrain.names import METHODS, SOURCES
    from leantrain.sampling.config import SamplingConfig
    from leantrain.sampling.estimators import RowSample, expected_squared_error, sample_rows
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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
