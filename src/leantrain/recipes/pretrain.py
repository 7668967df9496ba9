"""Pretrain a small Llama-style causal LM from scratch: corpus -> tokenizer -> model -> loop -> report.

The default is fully offline: the King James Bible, a byte-level BPE tokenizer trained on it and
cached in the run folder, AdamW, and any schedule of ``leantrain.schedules``. The budget is in
tokens; ``total_steps = tokens // (batch_size · seq_len · grad_accum)``. The run folder holds
``config.json``, ``tokenizer.json``, ``metrics.jsonl`` (a training record per update, a validation
record every ``eval_every``), ``checkpoint.safetensors`` (model, optimizer, scheduler, RNG and data
position) and, at the end, ``model/`` (an HF folder) and ``summary.json``. ``resume=True`` continues
from the checkpoint on exactly the same curve.

``hard_fraction`` δ < 1 trains on hard samples (Sahayam et al. 2023, "Can we learn better with
hard samples?"), in the online form of issue 5: each update draws ⌈grad_accum/δ⌉ candidate
mini-batches, scores them with a no-grad forward, and trains on the ``grad_accum`` highest-loss ones.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.data.corpus import load_corpus
from leantrain.data.token_windows import TokenWindows
from leantrain.data.tokenizer import cached_tokenizer, load_tokenizer
from leantrain.io import MetricsWriter, load_checkpoint, save_checkpoint
from leantrain.models.llama_sizes import LLAMA_SIZES, build_llama
from leantrain.optim.factory import OPTIMIZERS, build_optimizer
from leantrain.schedules import SCHEDULES, build, options_for


def _require(ok: bool, field_name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"PretrainConfig.{field_name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run. ``corpus``: "kjv", "bbc" or text file paths; ``tokenizer``: None to train
    one on the corpus, or a tokenizer.json / model folder. ``warmup_steps`` and ``decay_steps`` are
    step counts (int) or fractions of the run (float)."""

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
    rank: int = 128
    update_proj_gap: int | None = None
    schedule: str = "wsd"
    warmup_steps: int | float = 0.05
    decay_steps: int | float = 0.2
    decay: str | None = None
    min_lr_ratio: float = 0.0
    power_a: float = 4.0
    power_b: float = -0.51
    hard_fraction: float = 1.0
    val_fraction: float = 0.05
    eval_every: int = 50
    eval_batches: int = 16
    save_every: int = 100
    seed: int = 0
    max_chars: int | None = None

    def __post_init__(self) -> None:
        _require(self.size in LLAMA_SIZES, "size", self.size, f"one of {', '.join(LLAMA_SIZES)}")
        _require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        _require(self.schedule in SCHEDULES and self.schedule != "refined", "schedule", self.schedule,
                 f"one of {', '.join(s for s in SCHEDULES if s != 'refined')}")
        for name in ("seq_len", "batch_size", "grad_accum", "eval_every", "eval_batches", "save_every"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, value, "an integer >= 1")
        _require(self.tokens >= self.tokens_per_step, "tokens", self.tokens,
                 f">= one update's tokens (batch_size * seq_len * grad_accum = {self.tokens_per_step})")
        _require(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        _require(0.0 < self.hard_fraction <= 1.0, "hard_fraction", self.hard_fraction, "in (0, 1] (1 = plain)")
        _require(self.max_chars is None or self.max_chars > 0, "max_chars", self.max_chars, "None or > 0")

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


def causal_lm_loss(model: nn.Module, ids: Tensor) -> Tensor:
    return model(input_ids=ids, labels=ids).loss


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[Tensor]) -> float:
    """Mean next-token loss over fixed validation batches."""
    was_training = model.training
    model.eval()
    loss = sum(causal_lm_loss(model, ids).item() for ids in batches) / len(batches)
    model.train(was_training)
    return loss


def hardest(model: nn.Module, candidates: list[Tensor], keep: int) -> list[Tensor]:
    """The ``keep`` candidate mini-batches with the highest loss (ties: the earlier one)."""
    with torch.no_grad():
        losses = [causal_lm_loss(model, ids).item() for ids in candidates]
    order = sorted(range(len(candidates)), key=lambda i: -losses[i])
    return [candidates[i] for i in sorted(order[:keep])]


def pretrain(config: PretrainConfig, resume: bool = False, show_bar: bool = True,
             on_log: Callable[[dict], None] | None = None) -> PretrainResult:
    """Run (or with ``resume`` continue) ``config``; ``on_log`` sees every metrics record."""
    from tqdm.auto import tqdm

    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.safetensors"
    if resume:
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint_path}")
        saved = json.loads((run_dir / "config.json").read_text())
        if saved != json.loads(json.dumps(asdict(config))):
            raise ValueError(f"resume needs the same config as the run in {run_dir}; saved: {saved}")
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))

    tokens, vocab_size = prepare_tokens(config, run_dir)
    data = TokenWindows(tokens, config.seq_len, config.val_fraction, config.seed)
    val_batches = data.val_batches(config.batch_size, config.eval_batches)
    torch.manual_seed(config.seed)
    model = build_llama(config.size, vocab_size, config.seq_len).train()
    optimizer = build_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay,
                                betas=(0.9, 0.95), rank=config.rank, update_proj_gap=config.update_proj_gap)
    total_steps = config.total_steps
    scheduler = build(config.schedule, optimizer, total_steps=total_steps,
                      warmup_steps=config.steps(config.warmup_steps), min_lr_ratio=config.min_lr_ratio,
                      **options_for(config.schedule, {"batch_size": config.batch_size * config.grad_accum,
                                                      "tokens_per_step": config.tokens_per_step},
                                    **{key: value for key, value, default in (  # only the settings changed
                                        ("decay_steps", config.decay_steps, PretrainConfig.decay_steps),
                                        ("decay", config.decay, PretrainConfig.decay),
                                        ("a", config.power_a, PretrainConfig.power_a),
                                        ("b", config.power_b, PretrainConfig.power_b)) if value != default}))
    start_step = 0
    if resume:
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_step = state["step"]
    candidates = math.ceil(config.grad_accum / config.hard_fraction)
    parameters = sum(p.numel() for p in model.parameters())

    metrics = MetricsWriter(run_dir / "metrics.jsonl", resume_step=start_step if resume else None)
    val_losses: list[tuple[int, float]] = []

    def log(record: dict) -> None:
        metrics.write(record)
        if on_log is not None:
            on_log(record)

    bar = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, disable=not show_bar,
               desc=f"pretrain {config.size} {config.schedule}")
    started = time.perf_counter()
    with metrics:
        for step in bar:
            batches = [data.train_batch(step * candidates + j, config.batch_size) for j in range(candidates)]
            if candidates > config.grad_accum:
                batches = hardest(model, batches, config.grad_accum)
            loss = 0.0
            for ids in batches:
                micro_loss = causal_lm_loss(model, ids)
                (micro_loss / config.grad_accum).backward()
                loss += micro_loss.item() / config.grad_accum
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            log({"step": done, "tokens": done * config.tokens_per_step, "lr": lr, "loss": loss,
                 "grad_norm": grad_norm})
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
            if done % config.eval_every == 0 or done == total_steps:
                val_losses.append((done, evaluate(model, val_batches)))
                log({"step": done, "val_loss": val_losses[-1][1]})
            if done % config.save_every == 0 or done == total_steps:
                save_checkpoint(checkpoint_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                  "scheduler": scheduler.state_dict(),
                                                  "torch_rng": torch.get_rng_state(), "step": done})
    seconds = time.perf_counter() - started
    model.save_pretrained(run_dir / "model")
    shutil.copyfile(run_dir / "tokenizer.json", run_dir / "model" / "tokenizer.json")
    val_loss = val_losses[-1][1] if val_losses else evaluate(model, val_batches)
    summary = {"parameters": parameters, "train_tokens": total_steps * config.tokens_per_step,
               "steps": total_steps, "val_loss": val_loss, "train_seconds": seconds}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return PretrainResult(config, parameters, summary["train_tokens"], val_loss, val_losses, seconds, run_dir)
