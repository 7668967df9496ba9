"""``SFTConfig``: one supervised fine-tuning run of a causal LM (recipes/sft.py), torch-free."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from leantrain.config import seeded_sampling
from leantrain.config.engine import EngineConfig
from leantrain.config.fields import check_sections, setting
from leantrain.config.memory import MemoryOptions
from leantrain.config.optim import OptimConfig
from leantrain.names import TRAINING_SCHEDULES
from leantrain.validation import require_count, require_positive_ints

FULL_LR, LORA_LR = 2e-5, 2e-4  # TRL's default, and the usual LoRA one


@dataclass(frozen=True)
class SFTConfig:
    """One SFT run: its own fields, and the ``engine``, ``optim`` and ``memory`` sections. A field left None
    is derived when the config resolves (``resolved``): ``optim.lr`` 2e-5 for full fine-tuning, 2e-4 with
    LoRA; ``eval_problems`` 100, at most ``held_out``. ``memory.budget`` lets the planner choose the parts."""

    model: str = setting("smollm2", '"smollm2" (offline) or a local HF causal-LM folder')
    data: str = setting("arithmetic", '"arithmetic" (reasoning-gym chain_sum with worked answers), "rg:TASK" or a '
                                      ".jsonl/.csv of messages or prompt/completion rows")
    problems: int = setting(256, "problems per reasoning-gym configuration (256: an epoch of 42 updates, ~5 min "
                                 "on 2 CPU cores)")
    held_out: int = setting(100, "held-out examples, kept out of training")
    data_seed: int = setting(0, "draws the problems and the held-out split")
    epochs: int = setting(1, "passes over the training examples")
    max_steps: int | None = setting(None, "at most this many updates (none: the epochs)")
    batch_size: int = setting(8, "rows per update")
    max_length: int = setting(512, "longest example in tokens")
    packing: bool = setting(False, "pack whole examples into rows of --max-length")
    schedule: str = setting("cosine", "learning-rate schedule", choices=TRAINING_SCHEDULES)
    warmup: float = setting(0.05, "warm-up, a fraction of the updates")
    eval_every: int | None = setting(None, "updates between evaluations (none: the start and the end)")
    eval_problems: int | None = setting(None, "held-out problems whose greedy answer is checked (none: 100, at "
                                              "most --held-out; 0: loss only)")
    eval_batch_size: int = setting(32, "rows per evaluation batch")
    max_new_tokens: int = setting(64, "answer length limit at evaluation")
    engine: EngineConfig = setting(factory=lambda: EngineConfig(output_dir="runs/sft", grad_clip=1.0))
    optim: OptimConfig = setting(factory=OptimConfig)
    memory: MemoryOptions = setting(factory=MemoryOptions)

    def __post_init__(self) -> None:
        require_positive_ints(self, "problems", "held_out", "max_length", "batch_size", "epochs", "eval_batch_size",
                              "max_new_tokens")
        require_positive_ints(self, "max_steps", "eval_every", optional=True)
        if self.eval_problems is not None:
            require_count(self, "eval_problems", self.eval_problems, "no accuracy evaluation")
            if self.eval_problems > self.held_out:
                raise ValueError(f"SFTConfig.eval_problems={self.eval_problems} must be <= held_out={self.held_out}")
        if not (isinstance(self.warmup, int | float) and math.isfinite(self.warmup) and 0 <= self.warmup < 1):
            raise ValueError(f"SFTConfig.warmup={self.warmup!r} must be a fraction of the updates in [0, 1)")
        if self.schedule not in TRAINING_SCHEDULES:
            raise ValueError(f"SFTConfig.schedule={self.schedule!r} is not one of {', '.join(TRAINING_SCHEDULES)}")
        check_sections(self)

    def derived(self) -> dict[str, Any]:
        """The values of the fields left None that this config derives (see the class docstring)."""
        values: dict[str, Any] = seeded_sampling(self)
        if self.optim.lr is None:
            values["optim"] = replace(self.optim, lr=LORA_LR if self.memory.lora is not None else FULL_LR)
        if self.eval_problems is None:
            values["eval_problems"] = min(100, self.held_out)
        return values

    def resolved(self) -> SFTConfig:
        """This config with every derived field filled in (what a run records in config.json)."""
        return replace(self, **self.derived())
