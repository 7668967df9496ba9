"""Pretrain a small Llama-style causal LM from scratch: corpus -> tokenizer -> model -> engine -> report.

The default is fully offline: the King James Bible, a byte-level BPE tokenizer trained on it and
cached in the run folder, AdamW, and any schedule of ``leantrain.schedules``. The budget is in
tokens; ``total_steps = tokens // (batch_size · seq_len · grad_accum)``; ``batch_size`` counts sequences
per micro-batch over all processes. The model can be sampled (``sampling``) and lean (``lean``). The run folder holds
``config.json``, ``tokenizer.json``, ``metrics.jsonl`` (a training record per update, a validation
record every ``eval_every``), the engine's ``checkpoint.safetensors`` and, at the end, ``model/`` (an
HF folder) and ``summary.json``. ``resume=True`` continues from the checkpoint on exactly the same curve.

``hard_fraction`` δ < 1 trains on hard samples (Sahayam et al. 2023, "Can we learn better with
hard samples?"), in an online form: each update draws ⌈grad_accum/δ⌉ candidate
mini-batches, scores them with a no-grad forward in eval mode, and trains on the ``grad_accum``
highest-loss ones.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.convert import conversions
from leantrain.data.corpus import load_corpus
from leantrain.data.token_windows import TokenWindows
from leantrain.data.tokenizer import cached_tokenizer, load_tokenizer
from leantrain.engine import Engine, EngineConfig, TrainTask
from leantrain.models.llama_sizes import LLAMA_SIZES, build_llama
from leantrain.names import TRAINING_SCHEDULES
from leantrain.optim.factory import OPTIMIZERS, build_optimizer
from leantrain.sampling import SamplingConfig
from leantrain.schedules import OPTIONS, build, options_for

# PretrainConfig fields that are schedule options, and their names in ``schedules.build``.
SCHEDULE_FIELDS = {"decay_steps": "decay_steps", "decay": "decay", "power_a": "a", "power_b": "b"}


def _require(ok: bool, field_name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"PretrainConfig.{field_name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run. ``corpus``: "kjv", "bbc" or text file paths; ``tokenizer``: None to train
    one on the corpus, or a tokenizer.json / model folder. ``warmup_steps`` and ``decay_steps`` are
    step counts (int) or fractions of the run (float). The schedule settings left at None
    (``decay_steps``, ``decay``, ``power_a``, ``power_b``) take the schedule's own default; one set
    for a schedule that does not take it is an error."""

    output_dir: str = "runs/pretrain"
    corpus: str | tuple[str, ...] = "kjv"
    tokenizer: str | None = None
    vocab_size: int = 4096
    size: str = "5m"
    seq_len: int = 128
    batch_size: int = 16
    grad_accum: int = 1
    tokens: int = 2_000_000
    lr: float = 3e-3
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    optimizer: str = "adamw"
    rank: int | None = None
    update_proj_gap: int | None = None
    schedule: str = "wsd"
    warmup_steps: int | float = 0.05
    decay_steps: int | float | None = None
    decay: str | None = None
    min_lr_ratio: float = 0.0
    power_a: float | None = None
    power_b: float | None = None
    hard_fraction: float = 1.0
    val_fraction: float = 0.05
    eval_every: int = 50
    eval_batches: int = 16
    save_every: int = 100
    sampling: SamplingConfig | None = None
    lean: bool = False
    precision: str = "fp32"
    layout: str = "ddp"
    seed: int = 0
    max_chars: int | None = None

    def __post_init__(self) -> None:
        _require(self.size in LLAMA_SIZES, "size", self.size, f"one of {', '.join(LLAMA_SIZES)}")
        _require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        _require(self.schedule in TRAINING_SCHEDULES, "schedule", self.schedule,
                 f"one of {', '.join(TRAINING_SCHEDULES)}")
        for name in ("seq_len", "batch_size", "grad_accum", "eval_every", "eval_batches", "save_every"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, value, "an integer >= 1")
        _require(self.tokens >= self.tokens_per_step, "tokens", self.tokens,
                 f">= one update's tokens (batch_size * seq_len * grad_accum = {self.tokens_per_step})")
        _require(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        _require(0.0 < self.hard_fraction <= 1.0, "hard_fraction", self.hard_fraction, "in (0, 1] (1 = plain)")
        _require(self.max_chars is None or self.max_chars > 0, "max_chars", self.max_chars, "None or > 0")
        _require(self.sampling is None or isinstance(self.sampling, SamplingConfig), "sampling", self.sampling,
                 "a SamplingConfig or None")
        taken = OPTIONS[self.schedule]
        for field_name, key in SCHEDULE_FIELDS.items():
            value = getattr(self, field_name)
            _require(value is None or key in taken, field_name, value,
                     f"None: schedule {self.schedule!r} does not take it (it takes {', '.join(taken) or 'none'})")
        self.engine()  # validates precision and layout

    def schedule_settings(self) -> dict:
        """The schedule settings set (not None), by the names ``schedules.build`` takes."""
        settings = {key: getattr(self, field_name) for field_name, key in SCHEDULE_FIELDS.items()}
        return {key: value for key, value in settings.items() if value is not None}

    def engine(self, show_progress: bool = True) -> EngineConfig:
        return EngineConfig(max_steps=self.total_steps, grad_accum=self.grad_accum, grad_clip=self.grad_clip,
                            precision=self.precision, layout=self.layout, eval_every=self.eval_every,
                            save_every=self.save_every, seed=self.seed, show_progress=show_progress,
                            description=f"pretrain {self.size} {self.schedule}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.grad_accum

    @property
    def total_steps(self) -> int:
        return self.tokens // self.tokens_per_step

    def steps(self, value: int | float) -> int:
        return round(value * self.total_steps) if isinstance(value, float) else value


@dataclass
class PretrainResult:
    config: PretrainConfig
    parameters: int
    train_tokens: int
    val_loss: float
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    output_dir: Path = Path()


def prepare_tokens(config: PretrainConfig, run_dir: Path) -> tuple[Tensor, int]:
    """Token ids of the whole corpus and the vocabulary size; the tokenizer is cached in ``run_dir``."""
    text = load_corpus(config.corpus)[:config.max_chars]
    if config.tokenizer is None:
        tokenizer = cached_tokenizer(run_dir / "tokenizer.json", text, config.vocab_size)
    else:
        tokenizer = load_tokenizer(config.tokenizer)
        tokenizer.save(str(run_dir / "tokenizer.json"))
    ids = [i for encoding in tokenizer.encode_batch(text.splitlines(keepends=True)) for i in encoding.ids]
    return torch.tensor(ids, dtype=torch.long), tokenizer.get_vocab_size()


def mean_loss(engine: Engine, batches: list[Tensor]) -> float:
    """Mean next-token loss over fixed batches of equal-length sequences; each process takes its share."""
    total = torch.zeros((), dtype=torch.float64)
    for ids in batches:
        rows, counted = engine.local_rows(torch.arange(len(ids)))
        loss = engine.model(input_ids=ids[rows], labels=ids[rows]).loss
        total += loss.double().cpu() * int(counted.sum()) / len(ids)
    return float(engine.sum_over_processes(total)) / len(batches)


def hardest(model: nn.Module, candidates: list[Tensor], keep: int) -> list[Tensor]:
    """The ``keep`` candidate mini-batches with the highest loss (ties: the earlier one), scored in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        losses = [model(input_ids=ids, labels=ids).loss.item() for ids in candidates]
    model.train(was_training)
    order = sorted(range(len(candidates)), key=lambda i: -losses[i])
    return [candidates[i] for i in sorted(order[:keep])]


def pretrain(config: PretrainConfig, resume: bool = False, show_bar: bool = True,
             on_log: Callable[[dict], None] | None = None) -> PretrainResult:
    """Run (or with ``resume`` continue) ``config`` on the engine; ``on_log`` sees every metrics record."""
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(config.engine(show_bar), run_dir, on_record=on_log)
    if engine.is_main and not resume:  # on resume the engine checks the run's settings against its checkpoint
        (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    with engine.accelerator.main_process_first():  # process 0 trains and caches the tokenizer, the others load it
        tokens, vocab_size = prepare_tokens(config, run_dir)
    data = TokenWindows(tokens, config.seq_len, config.val_fraction, config.seed)
    val_batches = data.val_batches(config.batch_size, config.eval_batches)
    torch.manual_seed(config.seed)
    model = build_llama(config.size, vocab_size, config.seq_len).train()
    for convert in conversions(None, config.sampling, config.lean):
        convert(model)
    total_steps = config.total_steps
    candidates = math.ceil(config.grad_accum / config.hard_fraction)

    def batch(update: int) -> dict[str, Tensor]:
        micro = [data.train_batch(update * candidates + j, config.batch_size) for j in range(candidates)]
        if candidates > config.grad_accum:
            micro = hardest(engine.model, micro, config.grad_accum)
        ids = torch.cat(micro)
        return {"input_ids": ids, "labels": ids}

    def make_schedule(optimizer):
        return build(config.schedule, optimizer, total_steps=total_steps,
                     warmup_steps=config.steps(config.warmup_steps), min_lr_ratio=config.min_lr_ratio,
                     **options_for(config.schedule, {"batch_size": config.batch_size * config.grad_accum,
                                                     "tokens_per_step": config.tokens_per_step},
                                   **config.schedule_settings()))

    task = TrainTask(
        model=model, batch=batch,
        build_optimizer=lambda m: build_optimizer(config.optimizer, m, lr=config.lr, weight_decay=config.weight_decay,
                                                  betas=(0.9, 0.95), rank=config.rank,
                                                  update_proj_gap=config.update_proj_gap),
        build_schedule=make_schedule,
        evaluate=lambda engine: {"val_loss": mean_loss(engine, val_batches)},
        run_config=json.loads(json.dumps(asdict(config))),
        record_extras=lambda update: {"tokens": update * config.tokens_per_step},
    )
    outcome = engine.run(task, resume=resume)
    state = engine.full_state_dict()
    val_losses = [(r["step"], r["val_loss"]) for r in outcome.records]
    parameters = sum(p.numel() for p in model.parameters())
    summary = {"parameters": parameters, "train_tokens": total_steps * config.tokens_per_step,
               "steps": total_steps, "val_loss": val_losses[-1][1], "train_seconds": outcome.train_seconds}
    if engine.is_main:
        engine.unwrapped().save_pretrained(run_dir / "model", state_dict=state)
        shutil.copyfile(run_dir / "tokenizer.json", run_dir / "model" / "tokenizer.json")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return PretrainResult(config, parameters, summary["train_tokens"], summary["val_loss"], val_losses,
                          outcome.train_seconds, run_dir)
