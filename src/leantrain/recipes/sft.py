"""Supervised fine-tuning of a causal LM on the one engine (``leantrain sft``).

The loss is the mean negative log-likelihood of the answer tokens of the whole optimizer step
(data/sft.py masks the rest), as TRL's ``SFTTrainer`` with ``completion_only_loss`` /
``assistant_only_loss``: each micro-batch divides its token sum by the step's answer-token count
(``num_items_in_batch``), so gradient accumulation and several processes give the same loss. Rows are
one example each, padded to the batch's longest, or with ``packing`` whole examples packed into rows
of ``max_length`` tokens (position ids restart at each example, and HF attends within each one).
The memory parts (``config.memory``, ``config.optim``) are applied to the model and optimizer, or chosen
by the planner for ``memory.budget`` (plan/planner.py).

Before training, every ``eval_every`` updates and at the end, the run reports the held-out loss (the
same answer-token mean) and, for reasoning-gym data, the exact-answer accuracy of greedy answers to
``eval_problems`` held-out problems. The run folder holds ``config.json``, ``metrics.jsonl``, the
engine's checkpoint, ``summary.json`` and, at the end, ``model/``: the trained model as a plain HF folder
(LoRA merged), which ``leantrain rl --model`` and ``from_pretrained`` read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.config import describe_parts
from leantrain.config.fields import to_dict
from leantrain.config.sft import SFTConfig
from leantrain.data.sft import Example, SFTData, collate, encode_examples, load_sft_data, pack
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.models.lora import merge_lora
from leantrain.plan.planner import planned
from leantrain.recipes.causal_lm import folder_and_tokenizer, load_causal_lm
from leantrain.rl.rollouts import encode_prompts
from leantrain.rl.scoring import answer_accuracy
from leantrain.schedules import build as build_schedule

MODEL_FOLDER = "model"
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def training_rows(examples: list[Example], config: SFTConfig) -> list[list[Example]]:
    """One example per row, or whole examples packed into rows of ``max_length`` tokens."""
    return pack(examples, config.max_length) if config.packing else [[example] for example in examples]


def batches(rows: list[list[Example]], config: SFTConfig, pad_id: int,
            engine: Engine) -> tuple[Callable[[int], dict], int]:
    """(the batch of each update, updates per epoch): ``batch_size`` rows, in the engine's order of each epoch."""
    per_epoch = len(rows) // config.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(rows)} training rows make no batch of batch_size={config.batch_size}; use a smaller "
                         "batch or more data")

    def batch(update: int) -> dict[str, Tensor]:
        epoch, index = divmod(update, per_epoch)
        order = engine.epoch_order(len(rows), epoch)
        chosen = order[index * config.batch_size:(index + 1) * config.batch_size]
        return collate([rows[i] for i in chosen], pad_id)

    return batch, per_epoch


def answer_loss(model: nn.Module, micro: Mapping[str, Tensor]) -> Tensor:
    """The micro-batch's answer-token NLL sum over the whole step's answer-token count (see module docstring).
    Without a KV cache: HF separates packed examples only then, and recomputed layers rerun only then."""
    inputs = {key: micro[key] for key in MODEL_INPUTS if key in micro}
    return model(**inputs, labels=micro["labels"], num_items_in_batch=micro["answer_tokens"].sum(),
                 use_cache=False).loss


def held_out_loss(engine: Engine, rows: list[list[Example]], batch_size: int, pad_id: int) -> float:
    """Mean answer-token NLL over ``rows`` (split over the processes)."""
    shares, counted = engine.local_rows(torch.arange(len(rows)))
    totals = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(shares), batch_size):
        picked = shares[start:start + batch_size]
        batch = collate([rows[i] for i in picked.tolist()], pad_id)
        keep = counted[start:start + batch_size]
        batch["labels"][~keep] = -100
        tokens = float((batch["labels"][:, 1:] != -100).sum())
        if tokens:
            batch["answer_tokens"] = torch.full((len(picked),), tokens / len(picked), dtype=torch.float64)
            totals += torch.tensor([float(answer_loss(engine.model, batch)) * tokens, tokens], dtype=torch.float64)
    totals = engine.sum_over_processes(totals)
    return float(totals[0] / totals[1])


@dataclass
class SFTResult:
    config: SFTConfig  # resolved: the parts trained with (the planner's choice under a budget)
    records: list[dict]  # evaluations, the starting model first
    steps: int
    train_seconds: float
    output_dir: Path


@dataclass
class Prepared:
    """Everything a run needs before its model: the resolved config, the data encoded, the model folder."""

    config: SFTConfig
    data: SFTData
    folder: Path
    tokenizer: object
    train: list[list[Example]]
    held: list[list[Example]]

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id


def prepare(config: SFTConfig, data: SFTData | None = None, engine: Engine | None = None,
            say: Callable[[str], None] = print) -> Prepared:
    """``config`` resolved (derived fields, and under ``memory.budget`` the planner's parts, whose reasoning
    goes to ``say``), its data loaded and encoded. Nothing is written and no model is loaded."""
    config = config.resolved()
    data = data or load_sft_data(config.data, config.held_out, config.problems, config.data_seed)
    folder, tokenizer = folder_and_tokenizer(config.model, engine)
    limit = _context(folder)
    if limit is not None and config.max_length > limit:
        raise ValueError(f"max_length={config.max_length} is longer than the model's context of {limit} tokens")
    train = training_rows(encode_examples(data.train, tokenizer, config.max_length, data.name), config)
    held = [[example] for example in encode_examples(data.held_out, tokenizer, config.max_length, data.name)]
    width = config.max_length if config.packing else max(len(row[0]) for row in train + held)
    config = planned(config, str(folder), config.batch_size // config.engine.grad_accum, width, say)
    return Prepared(config, data, folder, tokenizer, train, held)


def _context(folder: Path) -> int | None:
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(folder), "max_position_embeddings", None)


def sft(config: SFTConfig, resume: bool = False, show_bar: bool = True,
        on_log: Callable[[dict], None] | None = None, data: SFTData | None = None) -> SFTResult:
    """Run (or with ``resume`` continue) ``config``; ``data``: rows instead of ``config.data``."""
    engine = Engine(config.engine.output_dir, on_record=on_log, show_progress=show_bar)
    prepared = prepare(config, data, engine, say=print if engine.is_main else lambda _: None)
    config, pad_id = prepared.config, prepared.pad_id
    batch, per_epoch = batches(prepared.train, config, pad_id, engine)
    total = per_epoch * config.epochs if config.max_steps is None else min(config.max_steps, per_epoch * config.epochs)
    model, tokenizer = load_causal_lm(prepared.folder, config.engine.seed, config.optim.dtype)
    config.memory.apply(model)
    model.train()
    problems = prepared.data.held_out_problems
    evaluated = problems.subset(range(config.eval_problems)) if problems is not None and config.eval_problems else None
    eval_ids = encode_prompts(tokenizer, evaluated.prompts) if evaluated is not None else None

    def evaluate(engine: Engine) -> dict[str, float]:
        metrics = {"heldout_loss": held_out_loss(engine, prepared.held, config.eval_batch_size, pad_id)}
        if evaluated is not None:
            metrics["heldout_accuracy"] = answer_accuracy(engine.unwrapped(), tokenizer, evaluated, eval_ids,
                                                          max_new_tokens=config.max_new_tokens,
                                                          batch_size=config.eval_batch_size)
        return metrics

    task = TrainTask(
        model=model, batch=batch, loss=answer_loss, optim=config.optim,
        build_schedule=lambda optimizer: build_schedule(config.schedule, optimizer, total_steps=total,
                                                        warmup_steps=round(config.warmup * total)),
        evaluate=evaluate, run_config=to_dict(config),
    )
    outcome = engine.run(task, config.engine, RunPlan(total, config.eval_every, eval_at_start=True,
                                                      description="sft"), resume=resume)
    state = engine.full_state_dict()
    if engine.is_main:
        save_trained_model(state, prepared.folder, config, Path(config.engine.output_dir) / MODEL_FOLDER)
    engine.finish({"parts": describe_parts(config.memory, config.optim), "steps": outcome.steps,
                   "train_seconds": outcome.train_seconds, "evaluations": outcome.records})
    return SFTResult(config, outcome.records, outcome.steps, outcome.train_seconds, Path(config.engine.output_dir))


def save_trained_model(state: Mapping[str, Tensor], folder: Path, config: SFTConfig, target: Path) -> None:
    """The trained weights as a plain HF folder (LoRA merged into the base weights), with the tokenizer."""
    model, tokenizer = load_causal_lm(folder)
    lora = config.memory.lora is not None
    if lora:
        replace(config.memory, sampling=None, checkpointing=None, lean=False, chunked_loss=False).apply(model)
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if unexpected or [name for name in missing if not name.endswith("lm_head.weight")]:
        raise RuntimeError(f"the trained state does not fit a fresh model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    if lora:
        merge_lora(model)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
