"""Fine-tune a sequence classifier: data -> model (full or LoRA, sampled and/or lean) -> loop -> report.

The default is fully offline: MiniLM-L6 on BBC News (deduplicated, seeded 80/20 split), inputs
padded to a fixed length as in the WTA-CRS paper's runs. Every epoch ends with an evaluation on
the test split. With a run folder, metrics go to ``metrics.jsonl`` and the whole training state
to ``checkpoint.safetensors`` (written atomically) at the end of every epoch and on Ctrl-C; a
resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from leantrain.convert import Conversion, conversions
from leantrain.data.classification import ClassificationData, load_classification_data
from leantrain.io import MetricsWriter, load_checkpoint, save_checkpoint
from leantrain.io.interrupt import StopRequest
from leantrain.models.pretrained import minilm_path
from leantrain.optim.factory import OPTIMIZERS, build_optimizer
from leantrain.sampling import (
    SamplingConfig,
    load_sampling_state_dict,
    sample_ids,
    sampling_state_dict,
)

MODES = ("full", "lora")
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
    lr: float = 5e-4
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    rank: int = 128
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
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FinetuneConfig.{name}={value!r} must be an integer >= 1")
        for name in ("max_train_examples", "max_test_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"FinetuneConfig.{name}={value!r} must be None or an integer >= 1")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"FinetuneConfig.lr={self.lr!r} must be a finite number > 0")
        if self.sampling is not None and not isinstance(self.sampling, SamplingConfig):
            raise ValueError(f"FinetuneConfig.sampling must be a SamplingConfig or None, got {self.sampling!r}")

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

    @property
    def accuracy(self) -> float:
        return self.accuracy_by_epoch[-1]


def parse_run(spec: str, base: FinetuneConfig) -> FinetuneConfig:
    """A run from a spec like "full", "lora+wtacrs@0.3+lean" or "full+crs@0.1": the mode first,
    then any of METHOD@BUDGET and "lean", joined by "+". Other fields come from ``base``."""
    from dataclasses import replace

    mode, *extras = spec.strip().split("+")
    if mode not in MODES:
        raise ValueError(f"run {spec!r}: starts with {mode!r}, not one of {MODES}")
    sampling, lean = None, False
    importance = base.sampling.importance if base.sampling is not None else "running"
    for extra in extras:
        if extra == "lean":
            lean = True
        elif "@" in extra:
            method, _, budget = extra.partition("@")
            try:
                sampling = SamplingConfig(method, float(budget), importance=importance, seed=base.seed)
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


def peak_training_memory(config: FinetuneConfig) -> int:
    """Bytes of one training step (AdamW) of this run's model at its batch size: the parameters
    plus the step's peak above what was resident before it, measured on CPU in a fresh process."""
    from leantrain.memory.peak import cpu_peak_in_subprocess
    from leantrain.memory.spec import StepSpec

    spec = StepSpec(config.model, config.batch_size, config.seq_len, "adamw", config.conversions(), config.seed)
    peak = cpu_peak_in_subprocess(spec)
    model, _, _ = spec()
    return peak.step_bytes + sum(p.numel() * p.element_size() for p in model.parameters())


def encode(tokenizer, texts: list[str], seq_len: int) -> dict[str, torch.Tensor]:
    encoded = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
    return dict(encoded)


@torch.no_grad()
def accuracy(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor, batch_size: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        batch = {k: v[start:start + batch_size] for k, v in inputs.items()}
        correct += int((model(**batch).logits.argmax(-1) == labels[start:start + batch_size]).sum())
    model.train()
    return correct / len(labels)


def _checkpoint_state(config, model, optimizer, schedule, epoch, step, loss_sum, result) -> dict:
    return {
        "config": asdict(config),
        "model": {n: p for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "sampling": sampling_state_dict(model),
        "rng": torch.get_rng_state(),
        "position": {"epoch": epoch, "step": step, "loss_sum": loss_sum},
        "accuracy_by_epoch": result.accuracy_by_epoch,
        "train_loss_by_epoch": result.train_loss_by_epoch,
    }


def _restore(path: Path, config, model, optimizer, schedule, result) -> tuple[int, int, float]:
    """Load a checkpoint into the run's objects; returns (epoch, step within it, loss sum so far)."""
    state = load_checkpoint(path)
    saved = state["config"]
    changed = sorted(k for k, v in asdict(config).items() if saved.get(k) != v)
    if changed:
        raise ValueError(f"cannot resume {str(path)!r}: the config differs in {changed}")
    unexpected = model.load_state_dict(state["model"], strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"cannot resume {str(path)!r}: unknown parameters {unexpected[:3]}")
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    load_sampling_state_dict(model, state["sampling"])
    torch.set_rng_state(state["rng"])
    result.accuracy_by_epoch[:] = state["accuracy_by_epoch"]
    result.train_loss_by_epoch[:] = state["train_loss_by_epoch"]
    position = state["position"]
    return position["epoch"], position["step"], position["loss_sum"]


def run_finetune(
    config: FinetuneConfig,
    data: ClassificationData | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_progress: Callable[[str], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    show_bar: bool = True,
) -> FinetuneResult:
    """Train ``config.epochs`` epochs; returns the test accuracy after each epoch.

    ``run_dir`` receives ``metrics.jsonl`` and ``checkpoint.safetensors``; ``resume`` continues
    from that checkpoint. ``on_step(global_step, loss)`` is called after every optimizer step.
    """
    from tqdm.auto import tqdm

    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to continue")
    checkpoint = None if run_dir is None else Path(run_dir) / "checkpoint.safetensors"
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"nothing to resume: {str(checkpoint)!r} does not exist")
    data = data or load_classification_data(config.data, config.test_data, config.text_column,
                                             config.label_column, seed=config.seed)
    train, test = data.train[:config.max_train_examples], data.test[:config.max_test_examples]
    model, tokenizer = prepare_model(config, len(data.label_names))
    train_inputs = encode(tokenizer, [e.text for e in train], config.seq_len)
    train_labels = torch.tensor([e.label for e in train])
    test_inputs = encode(tokenizer, [e.text for e in test], config.seq_len)
    test_labels = torch.tensor([e.label for e in test])

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay,
                                rank=config.rank)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total_steps)
    result = FinetuneResult(config, trainable_parameters=sum(p.numel() for p in trainable))
    first_epoch, first_step, loss_sum = 0, 0, 0.0
    if resume:
        first_epoch, first_step, loss_sum = _restore(checkpoint, config, model, optimizer, schedule, result)
    metrics = None if run_dir is None else MetricsWriter(
        Path(run_dir) / "metrics.jsonl", resume_step=first_epoch * steps_per_epoch + first_step if resume else None)

    def save(epoch: int, step: int) -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, _checkpoint_state(config, model, optimizer, schedule, epoch, step,
                                                          loss_sum, result))

    model.train()
    start = time.perf_counter()
    with StopRequest() as stop:
        try:
            for epoch in range(first_epoch, config.epochs):
                order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
                bar = tqdm(range(steps_per_epoch), desc=f"{config.label} epoch {epoch + 1}/{config.epochs}",
                           disable=not show_bar, leave=False, initial=first_step)
                for step in range(first_step, steps_per_epoch):
                    ids = order[step * config.batch_size:(step + 1) * config.batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    with sample_ids(model, ids):  # backward too: recomputed blocks draw their rows there
                        loss = model(**{k: v[ids] for k, v in train_inputs.items()}, labels=train_labels[ids]).loss
                        loss.backward()
                    optimizer.step()
                    schedule.step()
                    loss_sum += loss.item()
                    global_step = epoch * steps_per_epoch + step + 1
                    if metrics is not None:
                        metrics.write({"step": global_step, "epoch": epoch + 1, "loss": loss.item(),
                                       "lr": schedule.get_last_lr()[0]})
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                    if on_step is not None:
                        on_step(global_step, loss.item())
                    if stop.requested:
                        save(epoch, step + 1)
                        raise KeyboardInterrupt
                bar.close()
                result.train_loss_by_epoch.append(loss_sum / steps_per_epoch)
                result.accuracy_by_epoch.append(accuracy(model, test_inputs, test_labels, config.batch_size))
                if metrics is not None:
                    metrics.write({"step": (epoch + 1) * steps_per_epoch, "epoch": epoch + 1,
                                   "train_loss": result.train_loss_by_epoch[-1],
                                   "test_accuracy": result.accuracy_by_epoch[-1]})
                first_step, loss_sum = 0, 0.0
                save(epoch + 1, 0)
                if on_progress is not None:
                    on_progress(f"{config.label}: epoch {epoch + 1} test accuracy "
                                f"{result.accuracy_by_epoch[-1]:.4f}")
        finally:
            if metrics is not None:
                metrics.close()
    result.train_seconds = time.perf_counter() - start
    return result
