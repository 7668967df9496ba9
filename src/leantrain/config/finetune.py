"""``FinetuneConfig``: one fine-tuning run of a sequence classifier (recipes/finetune.py), torch-free."""

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
from leantrain.validation import require_positive_ints

# Peak learning rate of full fine-tuning and of LoRA when ``optim.lr`` is None: LoRA trains far fewer
# weights, from a zero-initialised B, and needs a larger one (docs/finetune.md, "Defaults").
DEFAULT_LR = {"full": 2e-4, "lora": 1e-2}


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run: its own fields, and the ``engine``, ``optim`` and ``memory`` sections. ``model``:
    "minilm" or a local HF model folder; ``data``: "bbc", "kjv-books", a .csv/.jsonl file or "hf:NAME".
    ``optim.lr`` None is derived when the config resolves: 2e-4 full, 1e-2 with LoRA (``DEFAULT_LR``)."""

    model: str = setting("minilm", '"minilm" (offline) or a local HF model folder')
    data: str = setting("bbc", '"bbc" or "kjv-books" (offline), a .csv/.jsonl file, or hf:NAME')
    test_data: str | None = setting(None, "a separate .csv/.jsonl test file")
    text_column: str = setting("text", "the column of the texts")
    label_column: str = setting("label", "the column of the labels")
    max_train_examples: int | None = setting(None, "use only the first N training examples", aliases=("--max-train",))
    max_test_examples: int | None = setting(None, "use only the first N test examples", aliases=("--max-test",))
    epochs: int = setting(1, "passes over the training examples (an evaluation after each)")
    batch_size: int = setting(16, "examples per update, over all processes")
    seq_len: int = setting(128, "tokens per example (padded, as the WTA-CRS paper's runs)")
    schedule: str = setting("linear", "learning-rate schedule", choices=TRAINING_SCHEDULES)
    warmup: float = setting(0.1, "warm-up, a fraction of the run")
    engine: EngineConfig = setting(factory=lambda: EngineConfig(output_dir="runs/finetune"))
    optim: OptimConfig = setting(factory=lambda: OptimConfig(weight_decay=0.01))
    memory: MemoryOptions = setting(factory=MemoryOptions)

    def __post_init__(self) -> None:
        require_positive_ints(self, "epochs", "batch_size", "seq_len")
        require_positive_ints(self, "max_train_examples", "max_test_examples", optional=True)
        if self.schedule not in TRAINING_SCHEDULES:
            raise ValueError(f"FinetuneConfig.schedule={self.schedule!r} is not one of {TRAINING_SCHEDULES}")
        if not (isinstance(self.warmup, int | float) and math.isfinite(self.warmup) and 0.0 <= self.warmup < 1.0):
            raise ValueError(f"FinetuneConfig.warmup={self.warmup!r} must be a fraction of the run in [0, 1)")
        check_sections(self)

    def derived(self) -> dict[str, Any]:
        """The learning rate when ``optim.lr`` is None (see the class docstring); the sampled layers' seed."""
        values: dict[str, Any] = seeded_sampling(self)
        if self.optim.lr is None:
            values["optim"] = replace(self.optim, lr=DEFAULT_LR["lora" if self.memory.lora is not None else "full"])
        return values

    def resolved(self) -> FinetuneConfig:
        """This config with every derived field filled in (what a run records in config.json)."""
        return replace(self, **self.derived())

    def warmup_steps(self, total_steps: int) -> int:
        return round(self.warmup * total_steps)

    @property
    def label(self) -> str:
        """The run's parts: "full + WTA-CRS@0.3 + lean", "LoRA r8"."""
        parts = self.memory.describe()
        return parts if self.memory.lora is not None else ("full" if parts == "full" else f"full + {parts}")
