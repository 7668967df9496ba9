"""Supervised fine-tuning of a causal LM on the one engine (``leantrain sft``).

The loss is the mean negative log-likelihood of the answer tokens of the whole optimizer step
(data/sft.py masks the rest), as TRL's ``SFTTrainer`` with ``completion_only_loss`` /
``assistant_only_loss``: each micro-batch divides its token sum by the step's answer-token count
(``num_items_in_batch``), so gradient accumulation and several processes give the same loss. Rows are
one example each, padded to the batch's longest, or with ``packing`` whole examples packed into rows
of ``max_length`` tokens (position ids restart at each example, and HF attends within each one).
The memory parts (memory/options.py) are applied to the model and optimizer, or chosen by the planner
for a ``memory_budget`` (memory/planner.py).

Before training, every ``eval_every`` updates and at the end, the run reports the held-out loss (the
same answer-token mean) and, for reasoning-gym data, the exact-answer accuracy of greedy answers to
``eval_problems`` held-out problems. The run folder holds ``config.json``, ``metrics.jsonl``, the
engine's checkpoint, ``summary.json`` and, at the end, ``model/``: the trained model as a plain HF folder
(LoRA merged), which ``leantrain rl --model`` and ``from_pretrained`` read.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.data.sft import Example, SFTData, collate, encode_examples, load_sft_data, pack
from leantrain.engine import Engine, EngineConfig, TrainTask
from leantrain.memory.options import MemoryOptions
from leantrain.models.lora import merge_lora
from leantrain.names import TRAINING_SCHEDULES
from leantrain.optim.factory import build_optimizer
from leantrain.recipes.causal_lm import load_causal_lm, open_run
from leantrain.rl.rollouts import encode_prompts
from leantrain.rl.scoring import answer_accuracy
from leantrain.schedules import build as build_schedule
from leantrain.validation import is_positive_int

CONFIG_FILE, SUMMARY_FILE, MODEL_FOLDER = "config.json", "summary.json", "model"
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


@dataclass(frozen=True)
class SFTConfig:
    """One SFT run. ``model``: "smollm2" or a local HF causal-LM folder. ``data``: "arithmetic", "rg:TASK" or a
    JSONL/CSV of TRL-format rows (data/sft.py); ``problems`` per reasoning-gym configuration (256: "arithmetic"
    then has about 440 distinct problems, its first configuration having only 200, and an epoch of 42
    updates, ~5 min on 2 CPU cores), ``held_out`` of
    them kept out. ``epochs`` over the training rows (``max_steps`` caps the updates). ``lr`` None: 2e-5 for
    full fine-tuning, 2e-4 with LoRA (TRL's default and the usual LoRA one), with ``warmup`` (a fraction of
    the updates) and ``schedule``. ``memory``: the memory parts; ``memory_budget`` (bytes) instead lets the
    planner choose them, keeping ``memory``'s LoRA and optimizer. ``grad_clip`` is the max global norm;
    it must be None with ``step_in_backward`` (each parameter is updated before the others' gradients exist)."""

    output_dir: str = "runs/sft"
    model: str = "smollm2"
    data: str = "arithmetic"
    problems: int = 256
    held_out: int = 100
    max_length: int = 512
    packing: bool = False
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None
    lr: float | None = None
    warmup: float = 0.05
    schedule: str = "cosine"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    memory_budget: int | None = None
    precision: str = "fp32"
    layout: str = "ddp"
    eval_every: int | None = None
    eval_problems: int = 100
    eval_batch_size: int = 32
    max_new_tokens: int = 64
    seed: int = 0
    data_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("problems", "held_out", "max_length", "batch_size", "grad_accum", "epochs", "eval_batch_size",
                     "max_new_tokens"):
            if not is_positive_int(getattr(self, name)):
                raise ValueError(f"SFTConfig.{name}={getattr(self, name)!r} must be an integer >= 1")
        for name in ("max_steps", "eval_every", "memory_budget"):
            value = getattr(self, name)
            if value is not None and not is_positive_int(value):
                raise ValueError(f"SFTConfig.{name}={value!r} must be None or an integer >= 1")
        if isinstance(self.eval_problems, bool) or not isinstance(self.eval_problems, int) or self.eval_problems < 0:
            raise ValueError(f"SFTConfig.eval_problems={self.eval_problems!r} must be an integer >= 0 (0: no "
                             "accuracy evaluation)")
        if self.eval_problems > self.held_out:
            raise ValueError(f"SFTConfig.eval_problems={self.eval_problems} must be <= held_out={self.held_out}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"SFTConfig.lr={self.lr!r} must be None or a finite number > 0")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"SFTConfig.warmup={self.warmup!r} must be a fraction of the updates in [0, 1)")
        if self.schedule not in TRAINING_SCHEDULES:
            raise ValueError(f"SFTConfig.schedule={self.schedule!r} is not one of {', '.join(TRAINING_SCHEDULES)}")
        if not isinstance(self.memory, MemoryOptions):
            raise ValueError(f"SFTConfig.memory must be a MemoryOptions, got {type(self.memory).__name__}")
        self.engine(1)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.memory.lora is not None else 2e-5)

    def engine(self, total_steps: int, show_progress: bool = True) -> EngineConfig:
        clip = None if self.memory.step_in_backward else self.grad_clip  # see the class docstring
        return EngineConfig(max_steps=total_steps, grad_accum=self.grad_accum, grad_clip=clip,
                            precision=self.precision, layout=self.layout, eval_every=self.eval_every,
                            save_every=self.eval_every, eval_at_start=True, seed=self.seed,
                            show_progress=show_progress, description="sft",
                            step_in_backward=self.memory.step_in_backward)


def training_rows(examples: list[Example], config: SFTConfig) -> list[list[Example]]:
    """One example per row, or whole examples packed into rows of ``max_length`` tokens."""
    return pack(examples, config.max_length) if config.packing else [[example] for example in examples]


def batches(rows: list[list[Example]], config: SFTConfig, pad_id: int) -> tuple[Callable[[int], dict], int]:
    """(the batch of each update, updates per epoch): ``batch_size`` rows, reshuffled each epoch from the seed."""
    per_epoch = len(rows) // config.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(rows)} training rows make no batch of batch_size={config.batch_size}; use a smaller "
                         "batch or more data")

    def batch(update: int) -> dict[str, Tensor]:
        epoch, index = divmod(update, per_epoch)
        order = list(range(len(rows)))
        random.Random(config.seed * 1_000_003 + epoch).shuffle(order)
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
    config: SFTConfig
    memory: MemoryOptions  # the parts trained with (the planner's choice under a budget)
    records: list[dict]  # evaluations, the starting model first
    steps: int
    train_seconds: float
    output_dir: Path


def planned_memory(config: SFTConfig, folder: Path, width: int) -> MemoryOptions:
    """``config.memory``, or under ``memory_budget`` the planner's choice for batches of ``width`` tokens."""
    if config.memory_budget is None:
        return config.memory
    from leantrain.memory.planner import plan_memory

    plan = plan_memory(str(folder), config.batch_size // config.grad_accum, width, config.memory_budget,
                       base=config.memory)
    print(plan.explain(), flush=True)
    return plan.chosen


def sft(config: SFTConfig, resume: bool = False, show_bar: bool = True,
        on_log: Callable[[dict], None] | None = None, data: SFTData | None = None) -> SFTResult:
    """Run (or with ``resume`` continue) ``config``; ``data``: rows instead of ``config.data``."""
    data = data or load_sft_data(config.data, config.held_out, config.problems, config.data_seed)
    engine, run_dir, folder, model, tokenizer = open_run(config.engine(1, show_bar), config.output_dir, config.model,
                                                         config.seed, on_log)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and config.max_length > limit:
        raise ValueError(f"max_length={config.max_length} is longer than the model's context of {limit} tokens")
    train = training_rows(encode_examples(data.train, tokenizer, config.max_length, data.name), config)
    held = [[example] for example in encode_examples(data.held_out, tokenizer, config.max_length, data.name)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch, per_epoch = batches(train, config, pad_id)
    total = per_epoch * config.epochs if config.max_steps is None else min(config.max_steps, per_epoch * config.epochs)
    width = config.max_length if config.packing else max(len(row[0]) for row in train + held)
    memory = planned_memory(config, folder, width)
    if memory.step_in_backward and config.grad_clip is not None and engine.is_main:
        print(f"sft: the step in backward updates each parameter before the others' gradients exist, so the "
              f"global-norm clipping at {config.grad_clip} is off (the norm is still logged)", flush=True)
    recorded = replace(config, memory=memory)  # the parts trained with: the planner's choice under a budget
    engine.config = recorded.engine(total, show_bar)
    memory.apply(model)
    model.train()
    if engine.is_main and not resume:
        (run_dir / CONFIG_FILE).write_text(json.dumps(asdict(recorded), indent=2))
    problems = data.held_out_problems
    evaluated = problems.subset(range(config.eval_problems)) if problems is not None and config.eval_problems else None
    eval_ids = encode_prompts(tokenizer, evaluated.prompts) if evaluated is not None else None

    def evaluate(engine: Engine) -> dict[str, float]:
        metrics = {"heldout_loss": held_out_loss(engine, held, config.eval_batch_size, pad_id)}
        if evaluated is not None:
            metrics["heldout_accuracy"] = answer_accuracy(engine.unwrapped(), tokenizer, evaluated, eval_ids,
                                                          max_new_tokens=config.max_new_tokens,
                                                          batch_size=config.eval_batch_size)
        return metrics

    task = TrainTask(
        model=model, batch=batch, loss=answer_loss,
        build_optimizer=lambda m: build_optimizer(memory.optimizer, m, lr=config.learning_rate,
                                                  weight_decay=config.weight_decay, rank=memory.rank,
                                                  state_bits=memory.state_bits),
        build_schedule=lambda optimizer: build_schedule(config.schedule, optimizer, total_steps=total,
                                                        warmup_steps=round(config.warmup * total)),
        evaluate=evaluate, run_config=json.loads(json.dumps(asdict(recorded))),
    )
    outcome = engine.run(task, resume=resume)
    state = engine.full_state_dict()
    if engine.is_main:
        save_trained_model(state, folder, memory, run_dir / MODEL_FOLDER)
        (run_dir / SUMMARY_FILE).write_text(json.dumps(
            {"memory": memory.describe(), "steps": outcome.steps, "train_seconds": outcome.train_seconds,
             "evaluations": outcome.records}, indent=2))
    if engine.world_size > 1:
        torch.distributed.barrier()
    return SFTResult(config, memory, outcome.records, outcome.steps, outcome.train_seconds, run_dir)


def save_trained_model(state: Mapping[str, Tensor], folder: Path, memory: MemoryOptions, target: Path) -> None:
    """The trained weights as a plain HF folder (LoRA merged into the base weights), with the tokenizer."""
    model, tokenizer = load_causal_lm(folder)
    if memory.lora is not None:
        replace(memory, sampling=None, checkpointing=None, lean=False, chunked_loss=False).apply(model)
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if unexpected or [name for name in missing if not name.endswith("lm_head.weight")]:
        raise RuntimeError(f"the trained state does not fit a fresh model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    if memory.lora is not None:
        merge_lora(model)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
