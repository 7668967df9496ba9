"""Pretrain a small Llama-style causal LM from scratch: corpus -> tokenizer -> model -> engine -> report.

The default is fully offline: the King James Bible, a byte-level BPE tokenizer trained on it and
cached in the run folder, AdamW, and any schedule of ``leantrain.schedules``. The budget is in
tokens; ``total_steps = tokens // (batch_size · seq_len · grad_accum)``; ``batch_size`` counts sequences
per micro-batch over all processes. The model takes every memory part (``memory``). The run folder holds
``config.json``, ``tokenizer.json``, ``metrics.jsonl`` (a training record per update, a validation
record every ``eval_every``), the engine's ``checkpoint.safetensors`` and, at the end, ``model/`` (an
HF folder) and ``summary.json``. ``resume=True`` continues from the checkpoint on exactly the same curve.

``hard_fraction`` δ < 1 trains on hard samples (Sahayam et al. 2023, "Can we learn better with
hard samples?"), in an online form: each update draws ⌈grad_accum/δ⌉ candidate
mini-batches, scores them with a no-grad forward in eval mode, and trains on the ``grad_accum``
highest-loss ones.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.config.fields import to_dict
from leantrain.config.pretrain import PretrainConfig
from leantrain.data.corpus import load_corpus
from leantrain.data.token_windows import TokenWindows
from leantrain.data.tokenizer import cached_tokenizer, load_tokenizer
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.models.llama_sizes import build_llama
from leantrain.plan.planner import planned
from leantrain.schedules import build, options_for


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


def resolve(config: PretrainConfig, vocab_size: int | None = None,
            say: Callable[[str], None] = print) -> PretrainConfig:
    """``config`` resolved; under ``memory.budget``, with the planner's parts for this model (of ``vocab_size``
    tokens, by default the tokenizer's to be trained) at micro-batches of batch_size × seq_len."""
    config = config.resolved()
    if config.memory.budget is None:
        return config
    model = build_llama(config.size, vocab_size or config.vocab_size, config.seq_len)
    return planned(config, model, config.batch_size, config.seq_len, say)


def pretrain(config: PretrainConfig, resume: bool = False, show_bar: bool = True,
             on_log: Callable[[dict], None] | None = None) -> PretrainResult:
    """Run (or with ``resume`` continue) ``config`` on the engine; ``on_log`` sees every metrics record."""
    run_dir, seed = Path(config.engine.output_dir), config.engine.seed
    engine = Engine(run_dir, on_record=on_log, show_progress=show_bar)
    config = config.resolved()
    with engine.accelerator.main_process_first():  # process 0 trains and caches the tokenizer, the others load it
        if engine.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        tokens, vocab_size = prepare_tokens(config, run_dir)
    config = resolve(config, vocab_size, say=print if engine.is_main else lambda _: None)
    data = TokenWindows(tokens, config.seq_len, config.val_fraction, seed)
    val_batches = data.val_batches(config.batch_size, config.eval_batches)
    torch.manual_seed(seed)
    model = build_llama(config.size, vocab_size, config.seq_len).train()
    config.memory.apply(model)
    total_steps, grad_accum = config.total_steps, config.engine.grad_accum
    candidates = math.ceil(grad_accum / config.hard_fraction)

    def batch(update: int) -> dict[str, Tensor]:
        micro = [data.train_batch(update * candidates + j, config.batch_size) for j in range(candidates)]
        if candidates > grad_accum:
            micro = hardest(engine.model, micro, grad_accum)
        ids = torch.cat(micro)
        return {"input_ids": ids, "labels": ids}

    def make_schedule(optimizer):
        return build(config.schedule, optimizer, total_steps=total_steps,
                     warmup_steps=config.steps(config.warmup_steps), min_lr_ratio=config.min_lr_ratio,
                     **options_for(config.schedule, {"batch_size": config.batch_size * grad_accum,
                                                     "tokens_per_step": config.tokens_per_step},
                                   **config.schedule_settings()))

    task = TrainTask(
        model=model, batch=batch, optim=config.optim, build_schedule=make_schedule,
        evaluate=lambda engine: {"val_loss": mean_loss(engine, val_batches)},
        run_config=to_dict(config),
        record_extras=lambda update: {"tokens": update * config.tokens_per_step},
    )
    plan = RunPlan(total_steps, config.eval_every, description=f"pretrain {config.size} {config.schedule}")
    outcome = engine.run(task, config.engine, plan, resume=resume)
    state = engine.full_state_dict()
    val_losses = [(r["step"], r["val_loss"]) for r in outcome.records]
    parameters = sum(p.numel() for p in model.parameters())
    summary = {"parameters": parameters, "train_tokens": total_steps * config.tokens_per_step,
               "steps": total_steps, "val_loss": val_losses[-1][1], "train_seconds": outcome.train_seconds}
    if engine.is_main:
        engine.unwrapped().save_pretrained(run_dir / "model", state_dict=state)
        shutil.copyfile(run_dir / "tokenizer.json", run_dir / "model" / "tokenizer.json")
    engine.finish(summary)
    return PretrainResult(config, parameters, summary["train_tokens"], summary["val_loss"], val_losses,
                          outcome.train_seconds, run_dir)
