"""Hyperfitting (Carlsson et al., "The Hyperfitting Phenomenon", ICLR 2025, arXiv 2412.04318): fine-tune
a pretrained causal LM to near-zero training loss on a small fixed set of sequences, and measure how
its continuations of held-out text change.

The paper's protocol is the default: all parameters, Adam (AdamW with weight decay 0), lr 1e-6, no
schedule, no clipping, batch 8, 20 epochs over 2,000 sequences of 256 tokens.
``HyperfitConfig(preset="cpu")`` is the 2-core shape (config/hyperfit.py, ``PRESETS``). Before training
and every ``eval_every`` epochs the model continues ``eval_contexts`` held-out contexts of ``context_len``
tokens from the training domain and from ``other_corpus``, greedily and with the paper's top-p baseline,
and is scored on them (``leantrain.metrics``). The run folder holds ``config.json``, ``metrics.jsonl``, the engine's
checkpoint, ``samples.jsonl``, and at the end the report (recipes/hyperfit_report.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.config.fields import to_dict
from leantrain.config.hyperfit import DOMAINS, HyperfitConfig
from leantrain.data.corpus import load_documents
from leantrain.data.fixed_sample import FixedSample, fixed_sample
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.generation import CitationBlocker, Decoding, continue_contexts
from leantrain.metrics import (
    NgramIndex,
    mean_entropy,
    mean_top1_probability,
    perplexity,
    repetition_rate,
    type_token_ratio,
)
from leantrain.plan.planner import planned
from leantrain.recipes.causal_lm import folder_and_tokenizer, load_causal_lm, model_folder
from leantrain.recipes.hyperfit_report import entropy_matched_control, summary, write_report

SAMPLES = "samples.jsonl"


def decoding(config: HyperfitConfig) -> Decoding:
    """The sampling baseline (the paper's: top-p 0.9, temperature 0.7, top-k 50)."""
    return Decoding(sample=True, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)


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

    seed = config.engine.seed
    sample = fixed_sample(load_documents(config.corpus), encode, config.seq_len, config.sequences,
                          config.eval_contexts, seed)
    other = None
    if config.other_corpus is not None:
        other = fixed_sample(load_documents(config.other_corpus), encode, config.seq_len, 1,
                             config.eval_contexts, seed).held_out
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
        for name, chosen in (("greedy", Decoding()), ("top_p", decoding(config))):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.engine.seed * 1_000_003 + engine.step)
                continuations = continue_contexts(model, local[:, :config.context_len], config.new_tokens, chosen,
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


def resolve(config: HyperfitConfig, folder: Path | None = None, say: Callable[[str], None] = print) -> HyperfitConfig:
    """``config`` resolved; under ``memory.budget``, with the planner's parts for the model of ``folder`` (by
    default ``config.model``'s) at micro-batches of batch_size × seq_len."""
    config = config.resolved()
    if config.memory.budget is None:
        return config
    rows = max(1, config.batch_size // config.engine.grad_accum)
    return planned(config, str(folder or model_folder(config.model)), rows, config.seq_len, say)


def hyperfit(config: HyperfitConfig, resume: bool = False, show_bar: bool = True,
             on_log: Callable[[dict], None] | None = None) -> HyperfitResult:
    """Run (or with ``resume`` continue) ``config`` on the engine and write the report."""
    engine = Engine(config.engine.output_dir, on_record=on_log, show_progress=show_bar)
    folder, tokenizer = folder_and_tokenizer(config.model, engine)
    config = resolve(config, folder, say=print if engine.is_main else lambda _: None)
    model, _ = load_causal_lm(folder, config.engine.seed, config.optim.dtype)
    check_lengths(config, model)
    data = prepare_data(config, tokenizer)
    config.memory.apply(model)
    model.train()
    run_dir = Path(config.engine.output_dir)
    if engine.is_main and not resume:
        (run_dir / SAMPLES).unlink(missing_ok=True)
    blocker = None if config.citation_block is None else CitationBlocker(data.sample.train.tolist(),
                                                                         config.citation_block)
    train, per_epoch = data.sample.train, config.steps_per_epoch

    def batch(update: int) -> dict[str, Tensor]:
        epoch, position = divmod(update, per_epoch)
        order = engine.epoch_order(len(train), epoch)
        ids = train[order[position * config.batch_size:(position + 1) * config.batch_size]]
        return {"input_ids": ids, "labels": ids}

    def write_samples(entry: dict) -> None:
        with open(run_dir / SAMPLES, "a") as file:
            file.write(json.dumps(entry) + "\n")

    task = TrainTask(
        model=model, batch=batch, optim=config.optim,
        evaluate=lambda engine: evaluate(engine, config, data, blocker, write_samples),
        run_config=to_dict(config),
        record_extras=lambda update: {"epoch": update / per_epoch},
    )
    plan = RunPlan(config.total_steps, config.eval_every * per_epoch, eval_at_start=True, description="hyperfit")
    outcome = engine.run(task, config.engine, plan, resume=resume)
    trainable = sum(p.numel() for p in engine.unwrapped().parameters() if p.requires_grad)
    control = None
    if config.entropy_control and engine.is_main:
        control = entropy_matched_control(config, folder, data, outcome.records[-1])
    result = HyperfitResult(config, outcome.records, outcome.train_seconds, outcome.eval_seconds, trainable,
                            control, run_dir)
    if engine.is_main:
        write_report(result, tokenizer)
    engine.finish(summary(result))
    return result
