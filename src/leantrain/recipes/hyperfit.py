"""Hyperfitting (Carlsson et al., "The Hyperfitting Phenomenon", ICLR 2025, arXiv 2412.04318): fine-tune
a pretrained causal LM to near-zero training loss on a small fixed set of sequences, and measure how
its continuations of held-out text change.

The paper's protocol is the default: all parameters, Adam (AdamW with weight decay 0), lr 1e-6, no
schedule, no clipping, batch 8, 20 epochs over 2,000 sequences of 256 tokens. ``HyperfitConfig.preset
("cpu")`` is the 2-core shape (``PRESETS``). Before training and every ``eval_every`` epochs the model
continues ``eval_contexts`` held-out contexts of ``context_len`` tokens from the training domain and
from ``other_corpus``, greedily and with the paper's top-p baseline, and is scored on them
(``leantrain.metrics``). The run folder holds ``config.json``, ``metrics.jsonl``, the engine's
checkpoint, ``samples.jsonl``, and at the end the report (recipes/hyperfit_report.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.convert import Conversion
from leantrain.data.corpus import load_documents
from leantrain.data.fixed_sample import FixedSample, fixed_sample
from leantrain.engine import Engine, EngineConfig, TrainTask
from leantrain.generation import CitationBlocker, Decoding, continue_contexts
from leantrain.metrics import (
    NgramIndex,
    mean_entropy,
    mean_top1_probability,
    perplexity,
    repetition_rate,
    type_token_ratio,
)
from leantrain.names import OPTIMIZERS
from leantrain.optim.factory import build_optimizer
from leantrain.recipes.causal_lm import lm_conversions, open_run
from leantrain.sampling import SamplingConfig
from leantrain.validation import is_positive_int

# Shapes of the run; every field stays a flag. "cpu": 32 sequences of 128 tokens instead of 2,000 of
# 256 (1/125 of the tokens), so that an epoch is 4 updates (~35 s for SmolLM2-135M on 2 cores); lr
# 1e-4 instead of 1e-6 and 12 epochs instead of 20, to reach a low training loss in 48 updates, not
# 5,000; 16 held-out contexts per domain and 128 new tokens (TTR still over the last 96), evaluated
# at the start, halfway and at the end.
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    "cpu": {"sequences": 32, "seq_len": 128, "epochs": 12, "lr": 1e-4, "eval_contexts": 16, "new_tokens": 128,
            "eval_every": 6, "eval_batch_size": 16},
}
DOMAINS = ("heldout", "other")  # held-out text of the training corpus; text of ``other_corpus``


@dataclass(frozen=True)
class HyperfitConfig:
    """One hyperfitting run. ``model``: "smollm2" (offline SmolLM2-135M-Instruct) or a local HF
    causal-LM folder; ``corpus`` / ``other_corpus``: "bbc", "kjv" or text files (``other_corpus``
    None: no second domain). ``lora``: a LoRA rank on every linear layer but the LM head, or on the
    last ``lora_layers`` blocks only. ``citation_block``: forbid continuing a training span after
    that many tokens at generation time. ``copy_threshold``: copied spans longer than this count as
    copies. ``eval_every``: epochs between evaluations; checkpoints are written at each of them."""

    output_dir: str = "runs/hyperfit"
    model: str = "smollm2"
    corpus: str | tuple[str, ...] = "bbc"
    other_corpus: str | tuple[str, ...] | None = "kjv"
    sequences: int = 2000
    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 20
    lr: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float | None = None
    optimizer: str = "adamw"
    rank: int | None = None
    update_proj_gap: int | None = None
    lora: int | None = None
    lora_layers: int | None = None
    sampling: SamplingConfig | None = None
    lean: bool = False
    precision: str = "fp32"
    layout: str = "ddp"
    eval_contexts: int = 32
    eval_every: int = 1
    eval_batch_size: int = 8
    context_len: int = 32
    new_tokens: int = 224
    ttr_window: int = 96
    top_p: float = 0.9
    temperature: float = 0.7
    top_k: int = 50
    citation_block: int | None = None
    copy_threshold: int = 10
    samples: int = 4
    entropy_control: bool = True
    seed: int = 0

    @classmethod
    def preset(cls, name: str, **settings: object) -> HyperfitConfig:
        """The ``PRESETS[name]`` shape, then ``settings`` on top."""
        if name not in PRESETS:
            raise ValueError(f"preset={name!r} is not one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **settings})

    def __post_init__(self) -> None:
        for name in ("sequences", "seq_len", "batch_size", "grad_accum", "epochs", "eval_contexts", "eval_every",
                     "eval_batch_size", "context_len", "new_tokens", "ttr_window", "copy_threshold"):
            if not is_positive_int(getattr(self, name)):
                raise ValueError(f"HyperfitConfig.{name}={getattr(self, name)!r} must be an integer >= 1")
        for name in ("lora", "lora_layers", "citation_block"):
            value = getattr(self, name)
            if value is not None and not is_positive_int(value):
                raise ValueError(f"HyperfitConfig.{name}={value!r} must be None or an integer >= 1")
        if self.sequences < self.batch_size:
            raise ValueError(f"HyperfitConfig.sequences={self.sequences} must be >= batch_size={self.batch_size} "
                             "(an epoch is sequences // batch_size updates)")
        if self.context_len >= self.seq_len:
            raise ValueError(f"HyperfitConfig.context_len={self.context_len} must be shorter than "
                             f"seq_len={self.seq_len} (contexts are the first tokens of held-out sequences)")
        if self.ttr_window > self.new_tokens:
            raise ValueError(f"HyperfitConfig.ttr_window={self.ttr_window} must be <= new_tokens={self.new_tokens}")
        if self.lora_layers is not None and self.lora is None:
            raise ValueError("HyperfitConfig.lora_layers needs lora (a LoRA rank)")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"HyperfitConfig.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"HyperfitConfig.lr={self.lr!r} must be a finite number > 0")
        self.decoding()
        self.engine()

    @property
    def steps_per_epoch(self) -> int:
        return self.sequences // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def decoding(self) -> Decoding:
        """The sampling baseline (the paper's: top-p 0.9, temperature 0.7, top-k 50)."""
        return Decoding(sample=True, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

    def engine(self, show_progress: bool = True) -> EngineConfig:
        every = self.eval_every * self.steps_per_epoch
        return EngineConfig(max_steps=self.total_steps, grad_accum=self.grad_accum, grad_clip=self.grad_clip,
                            precision=self.precision, layout=self.layout, eval_every=every, save_every=every,
                            eval_at_start=True, seed=self.seed, show_progress=show_progress,
                            description="hyperfit")

    def conversions(self, num_layers: int) -> tuple[Conversion, ...]:
        """LoRA (all linear layers but the head, or the last ``lora_layers`` blocks), then sampling, then lean."""
        return lm_conversions(self.lora, self.lora_layers, self.sampling, self.lean, num_layers)


def context_limit(model: nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def check_lengths(config: HyperfitConfig, model: nn.Module) -> None:
    limit = context_limit(model)
    if limit is None:
        return
    if config.seq_len > limit:
        raise ValueError(f"seq_len={config.seq_len} is longer than the model's context of {limit} tokens")
    if config.context_len + config.new_tokens > limit:
        raise ValueError(f"context_len + new_tokens = {config.context_len + config.new_tokens} is longer than the "
                         f"model's context of {limit} tokens")


@dataclass(frozen=True)
class HyperfitData:
    sample: FixedSample
    other: Tensor | None  # held-out sequences of the other domain
    index: NgramIndex  # of the training sequences, for copied spans


def prepare_data(config: HyperfitConfig, tokenizer) -> HyperfitData:
    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    sample = fixed_sample(load_documents(config.corpus), encode, config.seq_len, config.sequences,
                          config.eval_contexts, config.seed)
    other = None
    if config.other_corpus is not None:
        other = fixed_sample(load_documents(config.other_corpus), encode, config.seq_len, 1,
                             config.eval_contexts, config.seed).held_out
    return HyperfitData(sample, other, NgramIndex(sample.train.tolist()))


def domains(data: HyperfitData) -> dict[str, Tensor]:
    texts = dict(zip(DOMAINS, (data.sample.held_out, data.other), strict=True))
    return {domain: sequences for domain, sequences in texts.items() if sequences is not None}


def predictive_sums(model: nn.Module, sequences: Tensor, counted: Tensor, batch_size: int) -> Tensor:
    """Sums over the counted sequences of (log perplexity, mean entropy, mean top-1 probability, 1)."""
    sums = torch.zeros(4, dtype=torch.float64)
    for ids, keep in zip(sequences.split(batch_size), counted.split(batch_size), strict=True):
        logits = model(input_ids=ids.to(next(model.parameters()).device)).logits[:, :-1].float().cpu()
        for row in keep.nonzero().flatten().tolist():
            sums += torch.tensor([math.log(perplexity(logits[row], ids[row, 1:])), mean_entropy(logits[row]),
                                  mean_top1_probability(logits[row]), 1.0], dtype=torch.float64)
    return sums


def continuation_sums(config: HyperfitConfig, continuations: Tensor, counted: Tensor, index: NgramIndex) -> Tensor:
    """Sums over the counted continuations of (TTR, 2-gram and 3-gram repetition, longest copied span,
    copied span > copy_threshold), and the longest copied span of all."""
    rows = []
    for tokens in continuations[counted].tolist():
        span = index.longest_span(tokens)
        rows.append([type_token_ratio(tokens, config.ttr_window), repetition_rate(tokens, 2),
                     repetition_rate(tokens, 3), span, float(span > config.copy_threshold)])
    values = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
    return torch.cat([values.sum(0), values[:, 3].max(0, keepdim=True).values if len(rows) else torch.zeros(1)])


CONTINUATION_METRICS = ("ttr", "rep2", "rep3", "copy_mean", "copied")


def evaluate(engine: Engine, config: HyperfitConfig, data: HyperfitData, blocker: CitationBlocker | None,
             write_samples: Callable[[dict], None]) -> dict[str, float]:
    """The held-out metrics of every domain and decoding; each process scores its share of contexts.
    Top-p draws come from a generator seeded by (seed, step), so they do not move training's RNG."""
    model = engine.unwrapped()
    record: dict[str, float] = {"epoch": engine.step / config.steps_per_epoch}
    for domain, sequences in domains(data).items():
        rows, counted = engine.local_rows(torch.arange(len(sequences)))
        local = sequences[rows]
        sums = predictive_sums(model, local, counted, config.eval_batch_size)
        ppl_log, entropy, top1, count = engine.sum_over_processes(sums).tolist()
        record.update({f"{domain}_ppl": math.exp(ppl_log / count), f"{domain}_entropy": entropy / count,
                       f"{domain}_top1": top1 / count})
        texts = {}
        for name, decoding in (("greedy", Decoding()), ("top_p", config.decoding())):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed * 1_000_003 + engine.step)
                continuations = continue_contexts(model, local[:, :config.context_len], config.new_tokens, decoding,
                                                  config.eval_batch_size, blocker)
            sums = continuation_sums(config, continuations, counted, data.index)
            totals = engine.sum_over_processes(sums[:-1])
            longest = sums[-1].clone()
            if engine.world_size > 1:
                torch.distributed.all_reduce(longest, op=torch.distributed.ReduceOp.MAX)
            for metric, total in zip(CONTINUATION_METRICS, totals.tolist(), strict=True):
                record[f"{domain}_{metric}_{name}"] = total / count
            record[f"{domain}_copy_max_{name}"] = float(longest)
            texts[name] = continuations[:config.samples]
        if engine.is_main:
            for i, context in enumerate(local[:min(config.samples, int(counted.sum()))]):
                write_samples({"step": engine.step, "epoch": record["epoch"], "domain": domain, "index": i,
                               "context": context[:config.context_len].tolist(),
                               "original": context[config.context_len:].tolist(),
                               **{name: texts[name][i].tolist() for name in texts}})
    return record


@dataclass
class HyperfitResult:
    config: HyperfitConfig
    records: list[dict]  # the evaluations, step 0 (the starting model) first
    train_seconds: float
    eval_seconds: float
    trainable_parameters: int
    control: dict | None
    output_dir: Path


def hyperfit(config: HyperfitConfig, resume: bool = False, show_bar: bool = True,
             on_log: Callable[[dict], None] | None = None) -> HyperfitResult:
    """Run (or with ``resume`` continue) ``config`` on the engine and write the report."""
    from leantrain.recipes.hyperfit_report import entropy_matched_control, write_report

    engine, run_dir, folder, model, tokenizer = open_run(config.engine(show_bar), config.output_dir, config.model,
                                                         config.seed, on_log)
    check_lengths(config, model)
    data = prepare_data(config, tokenizer)
    for convert in config.conversions(model.config.num_hidden_layers):
        convert(model)
    model.train()
    if engine.is_main and not resume:
        (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
        (run_dir / "samples.jsonl").unlink(missing_ok=True)
    blocker = None if config.citation_block is None else CitationBlocker(data.sample.train.tolist(),
                                                                         config.citation_block)
    train = data.sample.train

    def batch(update: int) -> dict[str, Tensor]:
        epoch, position = divmod(update, config.steps_per_epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
        ids = train[order[position * config.batch_size:(position + 1) * config.batch_size]]
        return {"input_ids": ids, "labels": ids}

    def write_samples(entry: dict) -> None:
        with open(run_dir / "samples.jsonl", "a") as file:
            file.write(json.dumps(entry) + "\n")

    task = TrainTask(
        model=model, batch=batch,
        build_optimizer=lambda m: build_optimizer(config.optimizer, m, lr=config.lr, weight_decay=config.weight_decay,
                                                  rank=config.rank, update_proj_gap=config.update_proj_gap),
        evaluate=lambda engine: evaluate(engine, config, data, blocker, write_samples),
        run_config=json.loads(json.dumps(asdict(config), default=str)),
        record_extras=lambda update: {"epoch": update / config.steps_per_epoch},
    )
    outcome = engine.run(task, resume=resume)
    trainable = sum(p.numel() for p in engine.unwrapped().parameters() if p.requires_grad)
    control = None
    if config.entropy_control and engine.is_main:
        control = entropy_matched_control(config, folder, data, outcome.records[-1])
    result = HyperfitResult(config, outcome.records, outcome.train_seconds, outcome.eval_seconds, trainable,
                            control, run_dir)
    if engine.is_main:
        write_report(result, tokenizer)
    if engine.world_size > 1:
        torch.distributed.barrier()
    return result
