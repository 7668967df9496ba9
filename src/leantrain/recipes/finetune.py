"""Fine-tune a sequence classifier: data -> model (full or LoRA, sampled and/or lean) -> engine -> report.

The default is fully offline: MiniLM-L6 on BBC News (deduplicated, seeded 80/20 split), inputs
padded to a fixed length as in the WTA-CRS paper's runs. Every epoch ends with an evaluation on
the test split. The loop, checkpoints (every epoch and on Ctrl-C), resume and several processes
are the engine's (leantrain.engine); ``batch_size`` is the global batch over all processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from leantrain.convert import Conversion, conversions
from leantrain.data.classification import ClassificationData, load_classification_data
from leantrain.engine import Engine, EngineConfig, TrainTask
from leantrain.engine.loop import CHECKPOINT, SAMPLE_IDS
from leantrain.memory.state_bytes import parameter_bytes
from leantrain.models.pretrained import minilm_path
from leantrain.names import TRAINING_SCHEDULES
from leantrain.optim.factory import OPTIMIZERS, build_optimizer
from leantrain.sampling import SamplingConfig
from leantrain.schedules import build as build_schedule
from leantrain.validation import is_positive_int

MODES = ("full", "lora")
# Peak learning rate of each mode when ``FinetuneConfig.lr`` is None: LoRA trains far fewer weights,
# from a zero-initialised B, and needs a larger one (docs/finetune.md, "Defaults").
DEFAULT_LR = {"full": 2e-4, "lora": 1e-2}
METHOD_NAMES = {"exact": "exact", "crs": "CRS", "topk": "top-k", "wtacrs": "WTA-CRS"}


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run. ``model``: "minilm" or a local HF model folder; ``data``: "bbc", a
    .csv/.jsonl file or "hf:NAME"; ``sampling``: None for exact gradients."""

    model: str = "minilm"
    data: str = "bbc"
    test_data: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    mode: str = "full"
    lora_rank: int = 8
    sampling: SamplingConfig | None = None
    lean: bool = False
    epochs: int = 1
    batch_size: int = 16
    seq_len: int = 128
    lr: float | None = None
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    rank: int | None = None
    update_proj_gap: int | None = None
    schedule: str = "linear"
    warmup: float = 0.1
    grad_accum: int = 1
    precision: str = "fp32"
    layout: str = "ddp"
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"FinetuneConfig.optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.mode not in MODES:
            raise ValueError(f"FinetuneConfig.mode={self.mode!r} is not one of {MODES}")
        for name in ("epochs", "batch_size", "seq_len", "lora_rank"):
            value = getattr(self, name)
            if not is_positive_int(value):
                raise ValueError(f"FinetuneConfig.{name}={value!r} must be an integer >= 1")
        for name in ("max_train_examples", "max_test_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"FinetuneConfig.{name}={value!r} must be None or an integer >= 1")
        if self.lr is not None and not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"FinetuneConfig.lr={self.lr!r} must be None (the mode's default) or a finite number > 0")
        if self.sampling is not None and not isinstance(self.sampling, SamplingConfig):
            raise ValueError(f"FinetuneConfig.sampling must be a SamplingConfig or None, got {self.sampling!r}")
        if self.schedule not in TRAINING_SCHEDULES:
            raise ValueError(f"FinetuneConfig.schedule={self.schedule!r} is not one of {TRAINING_SCHEDULES}")
        if not (isinstance(self.warmup, int | float) and 0.0 <= self.warmup < 1.0):
            raise ValueError(f"FinetuneConfig.warmup={self.warmup!r} must be a fraction of the run in [0, 1)")
        self.engine(1, 1)  # validates grad_accum, precision and layout

    def engine(self, total_steps: int, steps_per_epoch: int, show_progress: bool = True) -> EngineConfig:
        """The engine settings of this run: an evaluation and a checkpoint after every epoch."""
        return EngineConfig(max_steps=total_steps, grad_accum=self.grad_accum, precision=self.precision,
                            layout=self.layout, eval_every=steps_per_epoch, save_every=steps_per_epoch,
                            seed=self.seed, show_progress=show_progress, description=self.label)

    @property
    def peak_lr(self) -> float:
        """``lr``, or the mode's default (``DEFAULT_LR``) when it is None."""
        return DEFAULT_LR[self.mode] if self.lr is None else self.lr

    def warmup_steps(self, total_steps: int) -> int:
        return round(self.warmup * total_steps)

    def conversions(self) -> tuple[Conversion, ...]:
        """Picklable in-place conversions, in the order they are applied: LoRA, sampling, lean."""
        return conversions(self.lora_rank if self.mode == "lora" else None, self.sampling, self.lean)

    @property
    def label(self) -> str:
        parts = ["LoRA" if self.mode == "lora" else "full"]
        if self.sampling is not None:
            parts.append(f"{METHOD_NAMES[self.sampling.method]}@{self.sampling.budget:g}")
        if self.lean:
            parts.append("lean")
        return " + ".join(parts)


@dataclass
class FinetuneResult:
    config: FinetuneConfig
    accuracy_by_epoch: list[float] = field(default_factory=list)
    train_loss_by_epoch: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    trainable_parameters: int = 0
    parameter_bytes: int = 0  # every parameter's storage once (tied weights once)

    @property
    def accuracy(self) -> float:
        return self.accuracy_by_epoch[-1]


def parse_run(spec: str, base: FinetuneConfig, importance: str = "running") -> FinetuneConfig:
    """A run from a spec like "full", "lora+wtacrs@0.3+lean" or "full+crs@0.1": the mode first,
    then any of METHOD@BUDGET (sampled with row ``importance``) and "lean", joined by "+". Other
    fields come from ``base``."""
    from dataclasses import replace

    mode, *extras = spec.strip().split("+")
    if mode not in MODES:
        raise ValueError(f"run {spec!r}: starts with {mode!r}, not one of {MODES}")
    sampling, lean = None, False
    for extra in extras:
        if extra == "lean":
            lean = True
        elif "@" in extra:
            try:
                sampling = SamplingConfig.from_spec(extra, importance=importance, seed=base.seed)
            except ValueError as error:
                raise ValueError(f"run {spec!r}: {error}") from None
        else:
            raise ValueError(f"run {spec!r}: {extra!r} is neither METHOD@BUDGET (e.g. wtacrs@0.3) nor 'lean'")
    return replace(base, mode=mode, sampling=sampling, lean=lean)


def load_classifier(model: str, num_labels: int) -> tuple[nn.Module, object]:
    """(model, tokenizer) from "minilm" or a local HF folder, with a fresh classification head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    folder = minilm_path() if model == "minilm" else Path(model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model {model!r}: {str(folder)!r} is not an HF model folder (no config.json)")
    logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
    logging.disable_progress_bar()
    classifier = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=num_labels, attn_implementation="eager", ignore_mismatched_sizes=True
    )
    return classifier, AutoTokenizer.from_pretrained(folder)


def prepare_model(config: FinetuneConfig, num_labels: int) -> tuple[nn.Module, object]:
    """The classifier with LoRA, sampling and lean companions applied as the config asks."""
    torch.manual_seed(config.seed)
    model, tokenizer = load_classifier(config.model, num_labels)
    for convert in config.conversions():
        convert(model)
    return model, tokenizer


@dataclass(frozen=True)
class FinetuneStep:
    """Picklable builder of one training step of exactly this run (its model, labels, conversions and
    optimizer, a batch of ``batch_size`` random token sequences), for the CPU peak subprocess."""

    config: FinetuneConfig
    num_labels: int

    def __call__(self) -> tuple[nn.Module, dict[str, torch.Tensor], torch.optim.Optimizer]:
        from leantrain.models.presets import random_batch

        model, _ = prepare_model(self.config, self.num_labels)
        model.train()
        batch = random_batch(model, self.config.batch_size, self.config.seq_len, self.config.seed)
        return model, batch, make_optimizer(self.config, model)


def peak_training_memory(result: FinetuneResult, num_labels: int) -> int:
    """Bytes of one training step of the run behind ``result``: its parameters plus the step's peak
    above what was resident before it, measured on CPU in a fresh process (docs/design.md, "How
    figures are measured")."""
    from leantrain.memory.peak import cpu_peak_in_subprocess

    return cpu_peak_in_subprocess(FinetuneStep(result.config, num_labels)).step_bytes + result.parameter_bytes


def make_optimizer(config: FinetuneConfig, model: nn.Module) -> torch.optim.Optimizer:
    return build_optimizer(config.optimizer, model, lr=config.peak_lr, weight_decay=config.weight_decay,
                           rank=config.rank, update_proj_gap=config.update_proj_gap)


def encode(tokenizer, texts: list[str], seq_len: int) -> dict[str, torch.Tensor]:
    encoded = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
    return dict(encoded)


def accuracy(engine: Engine, inputs: dict[str, torch.Tensor], labels: torch.Tensor, batch_size: int) -> float:
    """Share of correct predictions; each process classifies its share of every batch."""
    counts = torch.zeros(2)
    for start in range(0, len(labels), batch_size):
        rows, counted = engine.local_rows(torch.arange(start, min(start + batch_size, len(labels))))
        predicted = engine.model(**{k: v[rows] for k, v in inputs.items()}).logits.argmax(-1)
        counts += torch.stack([((predicted == labels[rows]) & counted).sum(), counted.sum()]).float()
    correct, total = engine.sum_over_processes(counts).tolist()
    return correct / total


def run_finetune(
    config: FinetuneConfig,
    data: ClassificationData | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_progress: Callable[[str], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
    show_bar: bool = True,
) -> FinetuneResult:
    """Train ``config.epochs`` epochs on the engine; returns the test accuracy after each epoch.

    ``run_dir`` receives ``metrics.jsonl`` and ``checkpoint.safetensors``; ``resume`` continues from
    that checkpoint. ``on_record`` sees every metrics record (one per update, one per evaluation).
    """
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to continue")
    if resume and not (Path(run_dir) / CHECKPOINT).is_file():
        raise FileNotFoundError(f"nothing to resume: {str(Path(run_dir) / CHECKPOINT)!r} does not exist")
    data = data or load_classification_data(config.data, config.test_data, config.text_column,
                                             config.label_column, seed=config.seed)
    train, test = data.train[:config.max_train_examples], data.test[:config.max_test_examples]
    model, tokenizer = prepare_model(config, len(data.label_names))
    train_inputs = encode(tokenizer, [e.text for e in train], config.seq_len)
    train_labels = torch.tensor([e.label for e in train])
    test_inputs = encode(tokenizer, [e.text for e in test], config.seq_len)
    test_labels = torch.tensor([e.label for e in test])
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    def batch(update: int) -> dict[str, torch.Tensor]:
        epoch, step = divmod(update, steps_per_epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        ids = order[step * config.batch_size:(step + 1) * config.batch_size]
        return {**{k: v[ids] for k, v in train_inputs.items()}, "labels": train_labels[ids], SAMPLE_IDS: ids}

    def report(record: dict) -> None:
        if on_record is not None:
            on_record(record)
        if on_progress is not None and "test_accuracy" in record:
            on_progress(f"{config.label}: epoch {record['epoch']} test accuracy {record['test_accuracy']:.4f}")

    task = TrainTask(
        model=model, batch=batch, build_optimizer=lambda m: make_optimizer(config, m),
        build_schedule=lambda optimizer: build_schedule(
            config.schedule, optimizer, total_steps=total_steps, warmup_steps=config.warmup_steps(total_steps)),
        evaluate=lambda engine: {"epoch": engine.step // steps_per_epoch,
                                 "test_accuracy": accuracy(engine, test_inputs, test_labels, config.batch_size)},
        run_config=asdict(config),
        record_extras=lambda update: {"epoch": math.ceil(update / steps_per_epoch)},
    )
    engine = Engine(config.engine(total_steps, steps_per_epoch, show_bar), run_dir, on_record=report)
    outcome = engine.run(task, resume=resume)
    return FinetuneResult(
        config,
        accuracy_by_epoch=[r["test_accuracy"] for r in outcome.records],
        train_loss_by_epoch=[r["train_loss"] for r in outcome.records],
        train_seconds=outcome.train_seconds,
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        parameter_bytes=parameter_bytes(model),
    )
