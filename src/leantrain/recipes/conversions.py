"""The in-place model conversions a run asks for, as picklable callables in their one valid order:
LoRA adapters, then sampled linear layers (they find the LoRA A matrices), then lean companions
(whose recomputed blocks rerun the sampled layers inside them). A subprocess that measures peak
memory rebuilds the model and replays the same list."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from leantrain.models.lora import apply_lora
from leantrain.sampling import SamplingConfig, apply_sampling

Conversion = Callable[[nn.Module], object]


def conversions(lora_rank: int | None = None, sampling: SamplingConfig | None = None,
                lean: bool = False) -> tuple[Conversion, ...]:
    steps: list[Conversion] = []
    if lora_rank is not None:
        steps.append(functools.partial(apply_lora, rank=lora_rank))
    if sampling is not None:
        steps.append(functools.partial(apply_sampling, config=sampling))
    if lean:
        from leantrain.lean import apply_lean

        steps.append(apply_lean)
    return tuple(steps)
