"""`leantrain pretrain`: a small Llama-style LM from scratch on the offline KJV (or your text)."""

from __future__ import annotations

import argparse

from leantrain.cli.common import (
    add_engine_arguments,
    add_optimizer_arguments,
    add_sampling_arguments,
    is_main_process,
    sampling_config,
    steps_or_fraction,
)

NAME = "pretrain"
HELP = "pretrain a small Llama-style LM from scratch (default: 5M params on the King James Bible)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leantrain.names import LLAMA_SIZES, TRAINING_SCHEDULES

    parser.add_argument("--corpus", nargs="+", default=["kjv"], help='"kjv", "bbc" or text files (default kjv)')
    parser.add_argument("--max-chars", type=int, default=None, help="use only the first N characters")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json or model folder (default: train BPE)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--size", default="5m", choices=tuple(LLAMA_SIZES))
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16,
                        help="sequences per micro-batch, over all processes (default 16)")
    parser.add_argument("--tokens", type=float, default=2e6, help="training token budget (default 2e6)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (default 1.0)")
    add_sampling_arguments(parser)
    parser.add_argument("--lean", action="store_true", help="swap in the memory-lean companions")
    parser.add_argument("--schedule", default="wsd", choices=TRAINING_SCHEDULES)
    parser.add_argument("--warmup-steps", type=steps_or_fraction, default=0.05, help="steps or fraction")
    parser.add_argument("--decay-steps", type=steps_or_fraction, default=None,
                        help="wsd/power: steps or fraction (default 0.2)")
    parser.add_argument("--decay", default=None, help="wsd/power decay shape (default 1-sqrt / exp)")
    parser.add_argument("--min-lr-ratio", type=float, default=0.0)
    parser.add_argument("--power-a", type=float, default=None, help="power: a (default 4.0)")
    parser.add_argument("--power-b", type=float, default=None, help="power: b (default -0.51)")
    parser.add_argument("--hard-fraction", type=float, default=1.0,
                        help="delta: train on the highest-loss grad_accum of grad_accum/delta candidates")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--save-every", type=int, default=100)
    add_optimizer_arguments(parser, lr=3e-3, weight_decay=0.1)
    add_engine_arguments(parser, output_dir="runs/pretrain")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging

    from leantrain.recipes.pretrain import PretrainConfig, pretrain

    logging.disable_progress_bar()  # the model-saving bar; training has its own
    corpus = args.corpus[0] if len(args.corpus) == 1 else tuple(args.corpus)
    sampling = sampling_config(args)
    config = PretrainConfig(
        output_dir=args.output_dir, corpus=corpus, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        size=args.size, seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=args.grad_accum,
        tokens=int(args.tokens), lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        optimizer=args.optim, rank=args.rank, update_proj_gap=args.update_proj_gap, schedule=args.schedule,
        warmup_steps=args.warmup_steps, decay_steps=args.decay_steps, decay=args.decay,
        min_lr_ratio=args.min_lr_ratio, power_a=args.power_a, power_b=args.power_b,
        hard_fraction=args.hard_fraction, eval_every=args.eval_every, save_every=args.save_every,
        sampling=sampling, lean=args.lean, precision=args.precision, layout=args.layout, seed=args.seed,
        max_chars=args.max_chars)
    main = is_main_process()
    if main:
        print(f"leantrain pretrain: Llama {config.size} on {corpus}, {config.total_steps} updates of "
              f"{config.tokens_per_step:,} tokens, {config.optimizer}, schedule {config.schedule}, "
              f"peak lr {config.lr:g}")
    result = pretrain(config, resume=args.resume,
                      on_log=lambda r: print(f"step {r['step']:>6}  val_loss {r['val_loss']:.4f}", flush=True)
                      if "val_loss" in r else None)
    if main:
        print(f"{result.parameters:,} parameters, {result.train_tokens:,} tokens in {result.train_seconds:.0f}s; "
              f"final validation loss {result.val_loss:.4f}")
        print(f"run folder: {result.output_dir} (metrics.jsonl, checkpoint.safetensors, model/, summary.json)")
    return 0
