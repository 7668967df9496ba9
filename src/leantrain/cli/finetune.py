"""`leantrain finetune`: fine-tune a classifier, or several side by side, and compare them."""

from __future__ import annotations

import argparse

from leantrain.names import OPTIMIZERS, SOURCES

NAME = "finetune"
HELP = "fine-tune a sequence classifier (default: MiniLM-L6 on BBC News, full vs WTA-CRS@0.3 [+ lean])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default="full,full+wtacrs@0.3,full+wtacrs@0.3+lean",
                        help="comma-separated runs: MODE[+METHOD@BUDGET][+lean], MODE in full|lora "
                             "(default: full,full+wtacrs@0.3,full+wtacrs@0.3+lean)")
    parser.add_argument("--model", default="minilm", help='"minilm" (offline) or a local HF model folder')
    parser.add_argument("--data", default="bbc", help='"bbc" (offline), a .csv/.jsonl file, or hf:NAME')
    parser.add_argument("--test-data", default=None, help="a separate .csv/.jsonl test file")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--importance", default="running", choices=SOURCES)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--optim", default="adamw", choices=OPTIMIZERS)
    parser.add_argument("--rank", type=int, default=128, help="rank of the low-rank optimizers (default 128)")
    parser.add_argument("--max-train", type=int, default=None, help="use only the first N training examples")
    parser.add_argument("--max-test", type=int, default=None, help="use only the first N test examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/finetune",
                        help="run folder; each run writes OUT/SPEC/metrics.jsonl and checkpoint.safetensors")
    parser.add_argument("--resume", action="store_true", help="continue each run from its checkpoint in --out")
    parser.add_argument("--no-peak", dest="peak", action="store_false",
                        help="skip measuring each run's peak training memory (a fresh process per run)")


def run(args: argparse.Namespace) -> int:
    from leantrain.data.classification import load_classification_data
    from leantrain.recipes.finetune import FinetuneConfig, parse_run, peak_training_memory, run_finetune
    from leantrain.sampling import SamplingConfig

    base = FinetuneConfig(
        model=args.model, data=args.data, test_data=args.test_data, text_column=args.text_column,
        label_column=args.label_column, epochs=args.epochs, batch_size=args.batch_size, seq_len=args.seq_len,
        lr=args.lr, lora_rank=args.lora_rank, optimizer=args.optim, rank=args.rank, max_train_examples=args.max_train,
        max_test_examples=args.max_test, seed=args.seed,
        sampling=SamplingConfig(importance=args.importance),
    )
    configs = [parse_run(spec, base) for spec in args.runs.split(",")]
    data = load_classification_data(args.data, args.test_data, args.text_column, args.label_column, seed=args.seed)
    n_train = len(data.train[:args.max_train])
    n_test = len(data.test[:args.max_test])
    print(f"leantrain finetune: {args.model} on {args.data} ({n_train} train / {n_test} test examples, "
          f"{len(data.label_names)} classes), {args.epochs} epoch(s), batch {args.batch_size} x {args.seq_len}")
    from pathlib import Path

    specs = [spec.strip() for spec in args.runs.split(",")]
    results = [
        run_finetune(config, data=data, run_dir=Path(args.out) / spec, resume=args.resume, on_progress=print)
        for spec, config in zip(specs, configs, strict=True)
    ]
    peaks = [peak_training_memory(config) if args.peak else None for config in configs]
    width = max(len(r.config.label) for r in results)
    print(f"\n{'run':<{width}}  {'test accuracy':>13}  {'peak memory':>11}  {'vs first':>8}  {'train time':>10}  "
          f"{'trainable params':>16}")
    for result, peak in zip(results, peaks, strict=True):
        memory = "-" if peak is None else f"{peak / 2**20:,.0f} MiB"
        ratio = "-" if peak is None else f"{peak / peaks[0]:.2f}x"
        print(f"{result.config.label:<{width}}  {result.accuracy:>13.4f}  {memory:>11}  {ratio:>8}  "
              f"{result.train_seconds:>9.0f}s  {result.trainable_parameters:>16,}")
    if args.peak:
        print("\npeak memory: parameters + the peak of one training step (AdamW) above what was resident before "
              "it,\nmeasured on CPU in a fresh process at the same batch size")
    return 0
