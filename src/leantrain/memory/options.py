"""``MemoryOptions``: every memory part of one training step, in one picklable value.

The command line (``leantrain sft`` / ``memory``), the planner (memory/planner.py), the peak-memory
subprocess and the recipes read the same options, so a configuration measured is the one trained.
Parts (docs/memory.md says what each saves and costs):

- ``lora``: LoRA adapters of this rank (frozen base weights: no gradients or states for them);
- ``sampling``: WTA-CRS (or CRS / top-k) linear layers, keeping ρ of their input rows;
- ``checkpointing``: "layers" or "selective" (lean/checkpointing.py);
- ``lean``: the exact lean companions (lean/), the chunked LM-head loss among them; ``chunked_loss``:
  that loss alone;
- ``optimizer`` (by name, ``rank`` for the low-rank ones) with ``state_bits`` 32 or 8 (block-wise 8-bit
  Adam moments);
- ``step_in_backward``: each parameter updated as soon as its gradient is accumulated, the gradient
  freed (optim/in_backward.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from leantrain.convert import Conversion, conversions
from leantrain.lean import LeanConfig
from leantrain.models.lora import apply_lora
from leantrain.module_names import LastLayers
from leantrain.names import CHECKPOINTING, OPTIMIZERS, STATE_BITS
from leantrain.sampling import SamplingConfig
from leantrain.validation import is_positive_int

METHOD_NAMES = {"exact": "exact", "crs": "CRS", "topk": "top-k", "wtacrs": "WTA-CRS"}
# The lean companions off but the chunked LM-head loss.
CHUNKED_LOSS_ONLY = LeanConfig(dropout=False, relu=False, norms=False, attention=False, recompute_mlp=False,
                               recompute_attention=False, activations=False, lm_loss=True)


def lora_adapters(model: nn.Module, rank: int, last_layers: int | None = None) -> dict[str, str]:
    """LoRA of ``rank`` on every linear layer but the head, or on those of the last ``last_layers`` blocks."""
    chosen = None if last_layers is None else LastLayers(last_layers, model.config.num_hidden_layers)
    return apply_lora(model, rank=rank, targets="all-linear", filter_fn=chosen, dropout=0.0)


@dataclass(frozen=True)
class MemoryOptions:
    lora: int | None = None
    lora_layers: int | None = None
    sampling: SamplingConfig | None = None
    checkpointing: str | None = None
    lean: bool = False
    chunked_loss: bool = False
    optimizer: str = "adamw"
    rank: int | None = None
    state_bits: int = 32
    step_in_backward: bool = False

    def __post_init__(self) -> None:
        for name in ("lora", "lora_layers", "rank"):
            value = getattr(self, name)
            if value is not None and not is_positive_int(value):
                raise ValueError(f"MemoryOptions.{name}={value!r} must be None or an integer >= 1")
        if self.lora_layers is not None and self.lora is None:
            raise ValueError("MemoryOptions.lora_layers needs lora (a LoRA rank)")
        if self.sampling is not None and not isinstance(self.sampling, SamplingConfig):
            raise ValueError(f"MemoryOptions.sampling must be a SamplingConfig or None, got {self.sampling!r}")
        if self.checkpointing is not None and self.checkpointing not in CHECKPOINTING:
            raise ValueError(f"MemoryOptions.checkpointing={self.checkpointing!r} must be one of {CHECKPOINTING} "
                             "or None")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"MemoryOptions.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.state_bits not in STATE_BITS:
            raise ValueError(f"MemoryOptions.state_bits={self.state_bits!r} must be one of {STATE_BITS}")
        if self.state_bits == 8 and self.optimizer == "sgd":
            raise ValueError("MemoryOptions.state_bits=8 quantises Adam's moments; optimizer='sgd' has none")

    def lean_config(self) -> LeanConfig | None:
        if self.lean:
            return LeanConfig()
        return CHUNKED_LOSS_ONLY if self.chunked_loss else None

    def conversions(self) -> tuple[Conversion, ...]:
        """LoRA (every linear layer but the head, or of the last ``lora_layers`` blocks; no dropout),
        sampling, checkpointing, lean: the order of ``lt.prepare``; picklable."""
        steps = list(conversions(None, self.sampling, self.lean_config() or False, self.checkpointing))
        if self.lora is not None:
            steps.insert(0, Conversion("lora", lora_adapters, {"rank": self.lora, "last_layers": self.lora_layers}))
        return tuple(steps)

    def apply(self, model: nn.Module) -> dict[str, dict[str, str]]:
        """Apply the conversions in place; returns what changed, per conversion."""
        return {step.name: step(model) for step in self.conversions()}

    def describe(self) -> str:
        """One line: the parts that are on."""
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
        optimizer = self.optimizer if self.rank is None else f"{self.optimizer} r{self.rank}"
        parts.append(optimizer + (" 8-bit" if self.state_bits == 8 else ""))
        if self.step_in_backward:
            parts.append("step in backward")
        return " + ".join(parts)
