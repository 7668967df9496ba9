"""``EngineConfig``: the section of every recipe config that says how the one training loop runs it.

Where the run folder is, how many micro-batches make an update, clipping, precision, how several
processes hold the model, how often a checkpoint is written, and the seed. What a recipe derives
(the number of updates, when to evaluate) goes to ``Engine.run`` as a ``RunPlan`` (engine/loop.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from leantrain.config.fields import setting
from leantrain.names import LAYOUTS, PRECISIONS
from leantrain.validation import is_positive_int


def optional_float(text: str) -> float | None:
    """A number, or "none" for None (e.g. ``--grad-clip none``: no clipping)."""
    return None if text.lower() == "none" else float(text)


@dataclass(frozen=True)
class EngineConfig:
    output_dir: str = setting("runs/train", "run folder: config.json, metrics.jsonl, checkpoint.safetensors",
                              aliases=("--out",))
    grad_accum: int = setting(1, "micro-batches per update and process")
    micro_tokens: int | None = setting(None, "the most tokens a micro-batch holds (its rows x its longest row): "
                                             "an update is split into more micro-batches until each fits (none: "
                                             "grad_accum micro-batches)")
    grad_clip: float | None = setting(None, "max global gradient norm; none: no clipping (the norm is still logged; "
                                            "off under the step in backward)", parse=optional_float)
    precision: str = setting("fp32", "bf16: autocast (weights and optimizer states stay fp32)", choices=PRECISIONS)
    layout: str = setting("ddp", "under torchrun / accelerate launch: DDP replicas or FSDP2 shards", choices=LAYOUTS)
    save_every: int | None = setting(None, "updates between checkpoints (none: at each evaluation and the end; "
                                           "Ctrl-C always saves)")
    seed: int = setting(0, "seeds the model's initialisation, the data order, sampling and dropout")

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"EngineConfig.output_dir={self.output_dir!r} must be a folder path")
        if not is_positive_int(self.grad_accum):
            raise ValueError(f"EngineConfig.grad_accum={self.grad_accum!r} must be an integer >= 1")
        if self.micro_tokens is not None and not is_positive_int(self.micro_tokens):
            raise ValueError(f"EngineConfig.micro_tokens={self.micro_tokens!r} must be None or an integer >= 1")
        if self.save_every is not None and not is_positive_int(self.save_every):
            raise ValueError(f"EngineConfig.save_every={self.save_every!r} must be None or an integer >= 1")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, int | float) and math.isfinite(self.grad_clip)
                                               and self.grad_clip > 0):
            raise ValueError(f"EngineConfig.grad_clip={self.grad_clip!r} must be None or a finite number > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"EngineConfig.precision={self.precision!r} is not one of {PRECISIONS} "
                             "(fp16 needs loss scaling; use bf16)")
        if self.layout not in LAYOUTS:
            raise ValueError(f"EngineConfig.layout={self.layout!r} is not one of {LAYOUTS}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"EngineConfig.seed={self.seed!r} must be an integer")
