"""`leantrain finetune`: fine-tune a classifier, or several side by side, and compare them."""

from __future__ import annotations

import argparse

from leantrain.cli.common import add_engine_arguments, add_optimizer_arguments, is_main_process

NAME = "finetune"
HELP = "fine-tune a sequence classifier (default: MiniLM-L6 on BBC News, full vs WTA-CRS@0.3 [+ lean])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leantrain.names import SOURCES, TRAINING_SCHEDULES

    parser.add_argument("--runs", default="full,full+wtacrs@0.3,full+wtacrs@0.3+lean",
                        help="comma-separated runs: MODE[+METHOD@BUDGET][+lean], MODE in full|lora "
                             "(default: full,full+wtacrs@0.3,full+wtacrs@0.3+lean)")
    parser.add_argument("--model", default="minilm", help='"minilm" (offline) or a local HF model folder')
    parser.add_argument("--data", default="bbc",
                        help='"bbc" or "kjv-books" (offline), a .csv/.jsonl file, or hf:NAME (default bbc)')
    parser.add_argument("--test-data", default=None, help="a separate .csv/.jsonl test file")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--importance", default="running", choices=SOURCES,
                        help="row importance of the sampled layers (default running)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="examples per update, over all processes")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--schedule", default="linear", choices=TRAINING_SCHEDULES)
    parser.add_argument("--warmup", type=float, default=0.1, help="warmup, as a fraction of the run (default 0.1)")
    parser.add_argument("--max-train", type=int, default=None, help="use only the first N training examples")
    parser.add_argument("--max-test", type=int, default=None, help="use only the first N test examples")
    parser.add_argument("--no-peak", dest="peak", action="store_false",
                        help="skip measuring each run's peak training memory (a fresh process per run)")
    add_optimizer_arguments(parser, lr="each mode's own, docs/finetune.md", weight_decay=0.01)
    add_engine_arguments(parser, output_dir="runs/finetune")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leantrain.data.classification import load_classification_data
    from leantrain.recipes.finetune import FinetuneConfig, parse_run, peak_training_memory, run_finetune

    base = FinetuneConfig(
        model=args.model, data=args.data, test_data=args.test_data, text_column=args.text_column,
        label_column=args.label_column, epochs=args.epochs, batch_size=args.batch_size, seq_len=args.seq_len,
        lr=args.lr, weight_decay=args.weight_decay, lora_rank=args.lora_rank, optimizer=args.optim, rank=args.rank,
        update_proj_gap=args.update_proj_gap, schedule=args.schedule, warmup=args.warmup,
        grad_accum=args.grad_accum, precision=args.precision, layout=args.layout,
        max_train_examples=args.max_train, max_test_examples=args.max_test, seed=args.seed,
    )
    specs = [spec.strip() for spec in args.runs.split(",")]
    configs = [parse_run(spec, base, importance=args.importance) for spec in specs]
    data = load_classification_data(args.data, args.test_data, args.text_column, args.label_column, seed=args.seed)
    main = is_main_process()
    say = print if main else (lambda *_, **__: None)
    say(f"leantrain finetune: {args.model} on {args.data} ({len(data.train[:args.max_train])} train / "
        f"{len(data.test[:args.max_test])} test examples, {len(data.label_names)} classes), {args.epochs} epoch(s), "
        f"batch {args.batch_size} x {args.seq_len}, {args.optim}")
    results = [
        run_finetune(config, data=data, run_dir=Path(args.output_dir) / spec, resume=args.resume, on_progress=say)
        for spec, config in zip(specs, configs, strict=True)
    ]
    if not main:
        return 0
    peaks = [peak_training_memory(result, len(data.label_names)) if args.peak else None for result in results]
    width = max(len(r.config.label) for r in results)
    print(f"\n{'run':<{width}}  {'test accuracy':>13}  {'peak memory':>11}  {'vs first':>8}  {'train time':>10}  "
          f"{'trainable params':>16}")
    for result, peak in zip(results, peaks, strict=True):
        memory = "-" if peak is None else f"{peak / 2**20:,.0f} MiB"
        ratio = "-" if peak is None else f"{peak / peaks[0]:.2f}x"
        print(f"{result.config.label:<{width}}  {result.accuracy:>13.4f}  {memory:>11}  {ratio:>8}  "
              f"{result.train_seconds:>9.0f}s  {result.trainable_parameters:>16,}")
    if args.peak:
        print(f"\npeak memory: parameters + the peak of one training step ({args.optim}, each run's own model and "
              "conversions)\nabove what was resident before it, measured on CPU in a fresh process at the same "
              "batch size")
    return 0

