"""Fine-tune a sequence classifier: data -> model (full or LoRA, sampled and/or lean) -> engine -> report.

The default is fully offline: MiniLM-L6 on BBC News (deduplicated, seeded 80/20 split), inputs
padded to a fixed length as in the WTA-CRS paper's runs. Every epoch ends with an evaluation on
the test split. The loop, checkpoints (every epoch and on Ctrl-C), resume and several processes
are the engine's (leantrain.engine); ``batch_size`` is the global batch over all processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from leantrain.config.fields import to_dict
from leantrain.config.finetune import FinetuneConfig
from leantrain.data.classification import ClassificationData, load_classification_data
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.engine.loop import CHECKPOINT, SAMPLE_IDS
from leantrain.memory.state_bytes import parameter_bytes
from leantrain.models.lora import DEFAULT_RANK
from leantrain.models.pretrained import minilm_path
from leantrain.plan.planner import planned
from leantrain.sampling import SamplingConfig
from leantrain.schedules import build as build_schedule


@dataclass
class FinetuneResult:
    config: FinetuneConfig  # resolved
    accuracy_by_epoch: list[float] = field(default_factory=list)
    train_loss_by_epoch: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    trainable_parameters: int = 0
    parameter_bytes: int = 0  # every parameter's storage once (tied weights once)

    @property
    def accuracy(self) -> float:
        return self.accuracy_by_epoch[-1]


def parse_run(spec: str, base: FinetuneConfig) -> FinetuneConfig:
    """A run from a spec like "full", "lora+wtacrs@0.3+lean" or "full+crs@0.1:norm": "full" or "lora" first,
    then any of METHOD@BUDGET[:IMPORTANCE] (the ``--sampling`` spelling) and "lean", joined by "+". The run
    is ``base`` plus the parts the spec names: "lora" is LoRA of ``base.memory.lora``'s rank (8 when None),
    "full" none. A part set both in ``base`` and in the spec, or "full" with a LoRA rank in ``base``, is an
    error rather than one silently winning. Its run folder is ``base``'s output folder / ``spec``."""
    spec = spec.strip()
    mode, *extras = spec.split("+")
    if mode not in ("full", "lora"):
        raise ValueError(f"run {spec!r}: starts with {mode!r}, not one of full, lora")
    if mode == "full" and base.memory.lora is not None:
        raise ValueError(f"run {spec!r} is full fine-tuning, but LoRA rank {base.memory.lora} is set for every run; "
                         "name the LoRA runs 'lora' in --runs instead")
    memory = replace(base.memory, lora=(base.memory.lora or DEFAULT_RANK) if mode == "lora" else None)
    for extra in extras:
        if extra == "lean":
            part = {"lean": True}
        elif "@" in extra:
            try:
                part = {"sampling": SamplingConfig.from_spec(extra)}
            except ValueError as error:
                raise ValueError(f"run {spec!r}: {error}") from None
        else:
            raise ValueError(f"run {spec!r}: {extra!r} is neither METHOD@BUDGET (e.g. wtacrs@0.3) nor 'lean'")
        (name,) = part
        if getattr(base.memory, name) not in (None, False):
            raise ValueError(f"run {spec!r} sets {name} to {extra!r}, but it is already set for every run "
                             f"({getattr(base.memory, name)!r}); give it in one place")
        memory = replace(memory, **part)
    engine = replace(base.engine, output_dir=str(Path(base.engine.output_dir) / spec))
    return replace(base, memory=memory, engine=engine)


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


def resolve(config: FinetuneConfig, num_labels: int = 2, say: Callable[[str], None] = print) -> FinetuneConfig:
    """``config`` resolved; under ``memory.budget``, with the planner's parts for its classifier (of
    ``num_labels`` labels) at micro-batches of batch_size × seq_len."""
    config = config.resolved()
    if config.memory.budget is None:
        return config
    torch.manual_seed(config.engine.seed)
    model, _ = load_classifier(config.model, num_labels)
    return planned(config, model, max(1, config.batch_size // config.engine.grad_accum), config.seq_len, say)


def prepare_model(config: FinetuneConfig, num_labels: int) -> tuple[nn.Module, object]:
    """The classifier with the memory parts of the (resolved) config applied, and its tokenizer."""
    torch.manual_seed(config.engine.seed)
    model, tokenizer = load_classifier(config.model, num_labels)
    config.memory.apply(model)
    return model, tokenizer


@dataclass(frozen=True)
class FinetuneStep:
    """Picklable builder of one training step of exactly this run (its model, labels, conversions and
    optimizer, a batch of ``batch_size`` random token sequences), for the CPU peak subprocess."""

    config: FinetuneConfig  # as a run resolved it (the planner's parts, not planned again)
    num_labels: int

    def __call__(self) -> tuple[nn.Module, dict[str, torch.Tensor], torch.optim.Optimizer]:
        from leantrain.models.presets import random_batch

        config = self.config.resolved()
        model, _ = prepare_model(config, self.num_labels)
        model.train()
        batch = random_batch(model, config.batch_size, config.seq_len, config.engine.seed)
        return model, batch, config.optim.build(model)


def peak_training_memory(result: FinetuneResult, num_labels: int) -> int:
    """Bytes of one training step of the run behind ``result``: its parameters plus the step's peak
    above what was resident before it, measured on CPU in a fresh process (docs/design.md, "How
    figures are measured")."""
    from leantrain.memory.peak import cpu_peak_in_subprocess

    return cpu_peak_in_subprocess(FinetuneStep(result.config, num_labels)).step_bytes + result.parameter_bytes


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
    resume: bool = False,
    on_progress: Callable[[str], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
    show_bar: bool = True,
) -> FinetuneResult:
    """Train ``config.epochs`` epochs on the engine; returns the test accuracy after each epoch.

    The run folder (``config.engine.output_dir``) receives ``config.json``, ``metrics.jsonl`` and
    ``checkpoint.safetensors``; ``resume`` continues from that checkpoint. ``on_record`` sees every metrics
    record (one per update, one per evaluation).
    """
    config = config.resolved()
    run_dir = Path(config.engine.output_dir)
    if resume and not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"nothing to resume: {str(run_dir / CHECKPOINT)!r} does not exist")
    data = data or load_classification_data(config.data, config.test_data, config.text_column,
                                             config.label_column, seed=config.engine.seed)
    train, test = data.train[:config.max_train_examples], data.test[:config.max_test_examples]
    config = resolve(config, len(data.label_names), say=on_progress or (lambda _: None))
    model, tokenizer = prepare_model(config, len(data.label_names))
    train_inputs = encode(tokenizer, [e.text for e in train], config.seq_len)
    train_labels = torch.tensor([e.label for e in train])
    test_inputs = encode(tokenizer, [e.text for e in test], config.seq_len)
    test_labels = torch.tensor([e.label for e in test])
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    def report(record: dict) -> None:
        if on_record is not None:
            on_record(record)
        if on_progress is not None and "test_accuracy" in record:
            on_progress(f"{config.label}: epoch {record['epoch']} test accuracy {record['test_accuracy']:.4f}")

    engine = Engine(run_dir, on_record=report, show_progress=show_bar)

    def batch(update: int) -> dict[str, torch.Tensor]:
        epoch, step = divmod(update, steps_per_epoch)
        order = torch.tensor(engine.epoch_order(len(train), epoch))
        ids = order[step * config.batch_size:(step + 1) * config.batch_size]
        return {**{k: v[ids] for k, v in train_inputs.items()}, "labels": train_labels[ids], SAMPLE_IDS: ids}

    task = TrainTask(
        model=model, batch=batch, optim=config.optim,
        build_schedule=lambda optimizer: build_schedule(
            config.schedule, optimizer, total_steps=total_steps, warmup_steps=config.warmup_steps(total_steps)),
        evaluate=lambda engine: {"epoch": engine.step // steps_per_epoch,
                                 "test_accuracy": accuracy(engine, test_inputs, test_labels, config.batch_size)},
        run_config=to_dict(config),
        record_extras=lambda update: {"epoch": math.ceil(update / steps_per_epoch)},
    )
    plan = RunPlan(total_steps, steps_per_epoch, description=config.label)
    outcome = engine.run(task, config.engine, plan, resume=resume)
    result = FinetuneResult(
        config,
        accuracy_by_epoch=[r["test_accuracy"] for r in outcome.records],
        train_loss_by_epoch=[r["train_loss"] for r in outcome.records],
        train_seconds=outcome.train_seconds,
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        parameter_bytes=parameter_bytes(model),
    )
    engine.finish({"label": config.label, "accuracy_by_epoch": result.accuracy_by_epoch,
                   "train_loss_by_epoch": result.train_loss_by_epoch, "train_seconds": result.train_seconds})
    return result
