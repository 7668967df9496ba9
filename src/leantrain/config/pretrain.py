"""``PretrainConfig``: one pretraining run of a small Llama-style LM from scratch (recipes/pretrain.py),
torch-free."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from leantrain.config import seeded_sampling
from leantrain.config.engine import EngineConfig
from leantrain.config.fields import check_sections, setting
from leantrain.config.memory import MemoryOptions
from leantrain.config.optim import OptimConfig
from leantrain.names import LLAMA_SIZES, SCHEDULE_OPTIONS, TRAINING_SCHEDULES
from leantrain.validation import require_positive_ints

LR = 3e-3  # the peak learning rate when ``optim.lr`` is None

# PretrainConfig fields that are schedule options, and their names in ``schedules.build``.
SCHEDULE_FIELDS = {"decay_steps": "decay_steps", "decay": "decay", "power_a": "a", "power_b": "b"}


def token_count(text: str) -> int:
    """``"2e6"`` or ``"2000000"`` -> 2000000."""
    return int(float(text))


def _require(ok: bool, field_name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"PretrainConfig.{field_name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run: its own fields, and the ``engine``, ``optim`` and ``memory`` sections. The budget
    is in tokens: ``total_steps = tokens // (batch_size · seq_len · engine.grad_accum)``. ``warmup_steps`` and
    ``decay_steps`` are step counts (int) or fractions of the run (float). The schedule settings left at None
    (``decay_steps``, ``decay``, ``power_a``, ``power_b``) take the schedule's own default; one set for a
    schedule that does not take it is an error."""

    corpus: str | tuple[str, ...] = setting("kjv", '"kjv", "bbc" or text files')
    max_chars: int | None = setting(None, "use only the first N characters")
    tokenizer: str | None = setting(None, "tokenizer.json or model folder (none: train a byte-level BPE)")
    vocab_size: int = setting(4096, "vocabulary of the trained tokenizer")
    size: str = setting("5m", "model size", choices=tuple(LLAMA_SIZES))
    seq_len: int = setting(128, "tokens per sequence")
    batch_size: int = setting(16, "sequences per micro-batch, over all processes")
    tokens: int = setting(2_000_000, "training token budget", parse=token_count)
    schedule: str = setting("wsd", "learning-rate schedule", choices=TRAINING_SCHEDULES)
    warmup_steps: int | float = setting(0.05, "warm-up: updates, or a fraction of the run")
    decay_steps: int | float | None = setting(None, "wsd/power decay: updates or fraction (none: 0.2)")
    decay: str | None = setting(None, "wsd/power decay shape (none: 1-sqrt / exp)")
    min_lr_ratio: float = setting(0.0, "the schedule's floor, a fraction of the peak")
    power_a: float | None = setting(None, "power: a (none: 4.0)")
    power_b: float | None = setting(None, "power: b (none: -0.51)")
    hard_fraction: float = setting(1.0, "δ: train on the highest-loss grad_accum of grad_accum/δ candidate "
                                        "micro-batches (1: plain)")
    val_fraction: float = setting(0.05, "share of the corpus held out for validation")
    eval_every: int = setting(50, "updates between validations")
    eval_batches: int = setting(16, "validation batches")
    engine: EngineConfig = setting(factory=lambda: EngineConfig(output_dir="runs/pretrain", grad_clip=1.0,
                                                                save_every=100))
    optim: OptimConfig = setting(factory=lambda: OptimConfig(lr=LR, weight_decay=0.1, betas=(0.9, 0.95)))
    memory: MemoryOptions = setting(factory=MemoryOptions)

    def __post_init__(self) -> None:
        _require(self.size in LLAMA_SIZES, "size", self.size, f"one of {', '.join(LLAMA_SIZES)}")
        _require(self.schedule in TRAINING_SCHEDULES, "schedule", self.schedule,
                 f"one of {', '.join(TRAINING_SCHEDULES)}")
        require_positive_ints(self, "vocab_size", "seq_len", "batch_size", "eval_every", "eval_batches")
        check_sections(self)
        _require(self.tokens >= self.tokens_per_step, "tokens", self.tokens,
                 f">= one update's tokens (batch_size * seq_len * grad_accum = {self.tokens_per_step})")
        _require(0.0 < self.hard_fraction <= 1.0, "hard_fraction", self.hard_fraction, "in (0, 1] (1 = plain)")
        _require(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction, "in (0, 1)")
        _require(self.max_chars is None or self.max_chars > 0, "max_chars", self.max_chars, "None or > 0")
        _require(math.isfinite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio,
                 "in [0, 1]")
        taken = SCHEDULE_OPTIONS[self.schedule]
        for field_name, key in SCHEDULE_FIELDS.items():
            value = getattr(self, field_name)
            _require(value is None or key in taken, field_name, value,
                     f"None: schedule {self.schedule!r} does not take it (it takes {', '.join(taken) or 'none'})")

    def derived(self) -> dict[str, Any]:
        """The sampled layers' seed (``seeded_sampling``) and, when ``optim.lr`` is None, 3e-3."""
        values: dict[str, Any] = seeded_sampling(self)
        if self.optim.lr is None:
            values["optim"] = replace(self.optim, lr=LR)
        return values

    def resolved(self) -> PretrainConfig:
        """This config with every derived field filled in (what a run records in config.json)."""
        return replace(self, **self.derived())

    def schedule_settings(self) -> dict:
        """The schedule settings set (not None), by the names ``schedules.build`` takes."""
        settings = {key: getattr(self, field_name) for field_name, key in SCHEDULE_FIELDS.items()}
        return {key: value for key, value in settings.items() if value is not None}

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.engine.grad_accum

    @property
    def total_steps(self) -> int:
        return self.tokens // self.tokens_per_step

    def steps(self, value: int | float) -> int:
        return round(value * self.total_steps) if isinstance(value, float) else value
