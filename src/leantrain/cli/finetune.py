"""`leantrain finetune`: fine-tune a classifier, or several side by side, and compare them."""

from __future__ import annotations

import argparse
import sys

from leantrain.cli.common import add_run_arguments, is_main_process
from leantrain.cli.flags import add_config_arguments, config_from_args
from leantrain.config.finetune import FinetuneConfig

NAME = "finetune"
HELP = "fine-tune a sequence classifier (default: MiniLM-L6 on BBC News, full vs WTA-CRS@0.3 [+ lean])"
DEFAULT_RUNS = "full,full+wtacrs@0.3,full+wtacrs@0.3+lean"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help="comma-separated runs, side by side: full|lora, then +METHOD@BUDGET and/or +lean; each is "
                             "the flags' config with the LoRA (of --lora's rank, 8 when unset), sampling and lean its "
                             f"spec names, in --output-dir/SPEC (default: {DEFAULT_RUNS})")
    parser.add_argument("--no-peak", dest="peak", action="store_false",
                        help="skip measuring each run's peak training memory (a fresh process per run)")
    add_config_arguments(parser, FinetuneConfig)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import json

    from leantrain.config.fields import to_dict
    from leantrain.recipes.finetune import parse_run, resolve

    base = config_from_args(FinetuneConfig, args)
    specs = [spec.strip() for spec in args.runs.split(",")]
    configs = [parse_run(spec, base) for spec in specs]
    if args.print_config:
        configs = [resolve(config, say=lambda text: print(text, file=sys.stderr)) for config in configs]
        print(json.dumps({spec: to_dict(config) for spec, config in zip(specs, configs, strict=True)}, indent=2))
        return 0
    from leantrain.data.classification import load_classification_data
    from leantrain.recipes.finetune import peak_training_memory, run_finetune

    data = load_classification_data(base.data, base.test_data, base.text_column, base.label_column,
                                    seed=base.engine.seed)
    main = is_main_process()
    say = print if main else (lambda *_, **__: None)
    say(f"leantrain finetune: {base.model} on {base.data} ({len(data.train[:base.max_train_examples])} train / "
        f"{len(data.test[:base.max_test_examples])} test examples, {len(data.label_names)} classes), {base.epochs} "
        f"epoch(s), batch {base.batch_size} x {base.seq_len}, {base.optim.name}")
    results = [run_finetune(config, data=data, resume=args.resume, on_progress=say) for config in configs]
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
        print(f"\npeak memory: parameters + the peak of one training step ({base.optim.name}, each run's own model "
              "and conversions)\nabove what was resident before it, measured on CPU in a fresh process at the same "
              "batch size")
    return 0
