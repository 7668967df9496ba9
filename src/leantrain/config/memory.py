"""``MemoryOptions``: the memory section of every recipe config — the parts that convert the model, and
the budget that lets the planner choose them.

Parts (docs/memory.md says what each saves and costs): ``lora`` adapters of this rank (frozen base
weights: no gradients or states for them) on ``lora_targets`` (of the last ``lora_layers`` blocks);
``sampling``: WTA-CRS (or CRS / top-k) linear layers keeping ρ of their input rows; ``checkpointing``:
"layers" or "selective"; ``lean``: the exact lean companions, the chunked LM-head loss among them;
``chunked_loss``: that loss alone. The optimizer's parts (8-bit states, the step in backward) are in
``OptimConfig``. ``budget`` (bytes): the planner (plan/planner.py) chooses the parts, and the 8-bit
states and step in backward, that fit; LoRA and the optimizer stay as given. ``apply(model)`` converts
in the one order of ``conversions`` (below), which ``lt.prepare`` is: LoRA adapters, then sampled linear
layers (they find the LoRA A matrices), then checkpointed layers (their rerun draws the sampled rows
again), then lean companions (whose recomputed blocks rerun the sampled layers inside them, and which
leave checkpointed layers' blocks to the layer's own rerun). The steps are picklable: recipes apply them,
and a subprocess that measures peak memory rebuilds the model and replays them. The parts are imported
when a model is converted, so that the command line reads these options without importing torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leantrain.config.fields import setting
from leantrain.names import CHECKPOINTING, METHOD_NAMES, TARGET_PRESETS
from leantrain.sampling.config import SamplingConfig
from leantrain.validation import is_positive_int

if TYPE_CHECKING:
    from torch import nn

    from leantrain.lean import LeanConfig

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kmg])(i?)(b?)|b?)\s*", re.IGNORECASE)


def memory_size(text: str) -> int:
    """``"4GiB"``, ``"512MiB"``, ``"1.5G"`` (binary), ``"2GB"`` (decimal) or a number of bytes -> bytes."""
    match = _SIZE.fullmatch(text)
    if match is None or not float(match.group(1)) > 0:
        raise ValueError(f"{text!r} is not a positive size like 4GiB, 512MiB or 1.5G")
    number, prefix, binary, byte = match.groups()
    power = "kmg".index(prefix.lower()) + 1 if prefix else 0
    decimal = bool(byte) and not binary  # "GB" is 10^9; "G", "GiB" are 2^30
    return int(float(number) * (1000 if decimal else 1024) ** power)


def optional_choice(text: str) -> str | None:
    """A choice, or "none" for None."""
    return None if text.lower() == "none" else text


@dataclass(frozen=True)
class Conversion:
    """One in-place conversion: ``function(model, **options)`` returning name -> what changed.
    Picklable when its options are (the configs are frozen dataclasses)."""

    name: str
    function: Callable[..., dict[str, str]]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, model: nn.Module) -> dict[str, str]:
        return self.function(model, **self.options)


def lora_adapters(model: nn.Module, rank: int, targets: str, last_layers: int | None = None) -> dict[str, str]:
    """LoRA of ``rank`` on the ``targets`` layers (of the last ``last_layers`` blocks), without dropout."""
    from leantrain.models.lora import apply_lora
    from leantrain.module_names import LastLayers

    chosen = None if last_layers is None else LastLayers(last_layers, model.config.num_hidden_layers)
    return apply_lora(model, rank=rank, targets=targets, filter_fn=chosen)


@dataclass(frozen=True)
class MemoryOptions:
    lora: int | None = setting(None, "LoRA adapters of this rank instead of full fine-tuning", aliases=("--lora-rank",))
    lora_layers: int | None = setting(None, "LoRA on the last N blocks only")
    lora_targets: str = setting("all-linear", "the layers LoRA adapts: every linear layer but the output ones "
                                              "(all-linear), or the WTA-CRS paper's (paper)", choices=TARGET_PRESETS)
    sampling: SamplingConfig | None = setting(None, "sample the 'paper' layers' weight gradients: METHOD@BUDGET"
                                                    "[:IMPORTANCE], e.g. wtacrs@0.3 or crs@0.1:norm (none: exact)",
                                              parse=SamplingConfig.from_spec, metavar="METHOD@BUDGET")
    checkpointing: str | None = setting(None, "rerun each layer in backward: keep its input only (layers), or its "
                                              "matmul results too (selective)",
                                        choices=(*CHECKPOINTING, "none"), parse=optional_choice)
    lean: bool = setting(False, "swap in the exact memory-lean companions")
    chunked_loss: bool = setting(False, "the LM-head loss in chunks, never the B x L x V logits (part of --lean)")
    budget: int | None = setting(None, "let the planner choose the memory parts, 8-bit states and the step in "
                                       "backward: the fastest combination whose step fits SIZE (e.g. 4GiB), "
                                       "keeping LoRA and the optimizer", flag="--memory-budget", parse=memory_size,
                                 metavar="SIZE")

    def __post_init__(self) -> None:
        for name in ("lora", "lora_layers", "budget"):
            value = getattr(self, name)
            if value is not None and not is_positive_int(value):
                raise ValueError(f"MemoryOptions.{name}={value!r} must be None or an integer >= 1")
        if self.lora_layers is not None and self.lora is None:
            raise ValueError("MemoryOptions.lora_layers needs lora (a LoRA rank)")
        if self.lora_targets not in TARGET_PRESETS:
            raise ValueError(f"MemoryOptions.lora_targets={self.lora_targets!r} is not one of {TARGET_PRESETS}")
        if self.sampling is not None and not isinstance(self.sampling, SamplingConfig):
            raise ValueError(f"MemoryOptions.sampling must be a SamplingConfig or None, got {self.sampling!r}")
        if self.checkpointing is not None and self.checkpointing not in CHECKPOINTING:
            raise ValueError(f"MemoryOptions.checkpointing={self.checkpointing!r} must be one of {CHECKPOINTING} "
                             "or None")
        for name in ("lean", "chunked_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MemoryOptions.{name}={getattr(self, name)!r} must be True or False")

    def lean_config(self) -> LeanConfig | None:
        """The lean companions that are on: all of them, the chunked loss alone, or none."""
        from leantrain.lean import CHUNKED_LOSS_ONLY, LeanConfig

        if self.lean:
            return LeanConfig()
        return CHUNKED_LOSS_ONLY if self.chunked_loss else None

    def conversions(self) -> tuple[Conversion, ...]:
        """The in-place conversions these options make, in the one order (module docstring); picklable."""
        from leantrain.lean import apply_lean
        from leantrain.lean.checkpointing import apply_checkpointing
        from leantrain.sampling import apply_sampling

        steps = []
        if self.lora is not None:
            steps.append(Conversion("lora", lora_adapters, {"rank": self.lora, "targets": self.lora_targets,
                                                            "last_layers": self.lora_layers}))
        if self.sampling is not None:
            steps.append(Conversion("sampling", apply_sampling, {"config": self.sampling}))
        if self.checkpointing is not None:
            steps.append(Conversion("checkpointing", apply_checkpointing, {"policy": self.checkpointing}))
        lean = self.lean_config()
        if lean is not None:
            steps.append(Conversion("lean", apply_lean, {"config": lean}))
        return tuple(steps)

    def apply(self, model: nn.Module) -> dict[str, dict[str, str]]:
        """Convert ``model`` in place; returns, per conversion, module name -> what changed."""
        return {step.name: step(model) for step in self.conversions()}

    def describe(self) -> str:
        """One line: the parts that are on ("full" when none)."""
        parts = []
        if self.lora is not None:
            parts.append(f"LoRA r{self.lora}" + (f" (last {self.lora_layers} layers)" if self.lora_layers else ""))
        if self.sampling is not None:
            parts.append(f"{METHOD_NAMES[self.sampling.method]}@{self.sampling.budget:g}")
        if self.checkpointing is not None:
            parts.append(f"checkpointing ({self.checkpointing})")
        if self.lean:
            parts.append("lean")
        elif self.chunked_loss:
            parts.append("chunked loss")
        return " + ".join(parts) or "full"


def prepare(model: nn.Module, lora: int | None = None, sampling: SamplingConfig | None = None,
            lean: bool = False, checkpointing: str | None = None) -> dict[str, dict[str, str]]:
    """``MemoryOptions(lora=..., sampling=..., lean=..., checkpointing=...).apply(model)``: convert ``model`` in
    place with LoRA (on every linear layer but the output ones, no dropout) -> sampling -> checkpointing ->
    lean, each with its default selector (call ``apply_lora`` / ``apply_sampling`` / ``apply_checkpointing`` /
    ``apply_lean`` yourself to choose layers or companions). Returns, per conversion applied ("lora",
    "sampling", "checkpointing", "lean"), module name -> what changed. An optimizer is best built
    afterwards: LoRA changes which parameters train (sampling and lean do not)."""
    return MemoryOptions(lora=lora, sampling=sampling, lean=lean, checkpointing=checkpointing).apply(model)
