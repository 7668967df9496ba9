"""leantrain: train transformer language models in less memory and with fewer hand-tuned knobs."""

__version__ = "0.1.0"

from leantrain.sampling import (
    SampledLinear,
    SamplingConfig,
    apply_sampling,
    exact_gradients,
    remove_sampling,
    sample_ids,
    sampled_layers,
)
