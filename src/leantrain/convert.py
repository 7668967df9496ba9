"""``prepare``: the in-place model conversions, applied in their one valid order, with a report.

The order is LoRA adapters, then sampled linear layers (they find the LoRA A matrices), then
checkpointed layers (their rerun draws the sampled rows again), then lean companions (whose
recomputed blocks rerun the sampled layers inside them, and which leave checkpointed layers'
blocks to the layer's own rerun). ``conversions`` returns
the same steps as picklable callables: recipes apply them, and a subprocess that measures peak
memory rebuilds the model and replays them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from leantrain.lean import LeanConfig, apply_lean
from leantrain.lean.checkpointing import apply_checkpointing
from leantrain.models.lora import apply_lora
from leantrain.names import CHECKPOINTING
from leantrain.sampling import SamplingConfig, apply_sampling


@dataclass(frozen=True)
class Conversion:
    """One in-place conversion: ``function(model, **options)`` returning name -> what changed.
    Picklable when its options are (the configs are frozen dataclasses)."""

    name: str
    function: Callable[..., dict[str, str]]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, model: nn.Module) -> dict[str, str]:
        return self.function(model, **self.options)


def conversions(lora: int | None = None, sampling: SamplingConfig | None = None,
                lean: bool | LeanConfig = False, checkpointing: str | None = None) -> tuple[Conversion, ...]:
    """The steps ``prepare`` applies, in order: ``lora`` (LoRA rank, or None), ``sampling`` (a
    SamplingConfig, or None), ``checkpointing`` ("layers", "selective" or None), ``lean`` (a
    LeanConfig, True for the default one, or False)."""
    if lora is not None and (isinstance(lora, bool) or not isinstance(lora, int) or lora < 1):
        raise ValueError(f"lora={lora!r} must be a LoRA rank (an integer >= 1) or None")
    if sampling is not None and not isinstance(sampling, SamplingConfig):
        raise ValueError(f"sampling must be a SamplingConfig or None, got {type(sampling).__name__}")
    if not isinstance(lean, bool | LeanConfig):
        raise ValueError(f"lean must be True, False or a LeanConfig, got {lean!r}")
    if checkpointing is not None and checkpointing not in CHECKPOINTING:
        raise ValueError(f"checkpointing={checkpointing!r} must be one of {CHECKPOINTING} or None")
    steps = []
    if lora is not None:
        steps.append(Conversion("lora", apply_lora, {"rank": lora}))
    if sampling is not None:
        steps.append(Conversion("sampling", apply_sampling, {"config": sampling}))
    if checkpointing is not None:
        steps.append(Conversion("checkpointing", apply_checkpointing, {"policy": checkpointing}))
    if lean:
        steps.append(Conversion("lean", apply_lean, {"config": LeanConfig() if lean is True else lean}))
    return tuple(steps)


def prepare(model: nn.Module, lora: int | None = None, sampling: SamplingConfig | None = None,
            lean: bool | LeanConfig = False, checkpointing: str | None = None) -> dict[str, dict[str, str]]:
    """Convert ``model`` in place with LoRA -> sampling -> checkpointing -> lean, each with its default
    selector (call ``apply_lora`` / ``apply_sampling`` / ``apply_checkpointing`` / ``apply_lean`` yourself
    to choose layers). Returns, per conversion applied ("lora", "sampling", "checkpointing", "lean"),
    module name -> what changed. An optimizer is
    best built afterwards: LoRA changes which parameters train (sampling and lean do not)."""
    return {step.name: step(model) for step in conversions(lora, sampling, lean, checkpointing)}
