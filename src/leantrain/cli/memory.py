"""`leantrain memory`: what one training step of a model holds, by module, and its measured peak."""

from __future__ import annotations

import argparse
import json

from leantrain.cli.common import add_sampling_arguments, sampling_config
from leantrain.names import MODEL_PRESETS, OPTIMIZERS

NAME = "memory"
HELP = "bytes one training step keeps (saved activations by module, parameters, gradients, optimizer) and its peak"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"a preset ({', '.join(MODEL_PRESETS)}), minilm, or a HF model folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--optim", "--optimizer", dest="optim", default="adamw", choices=[*OPTIMIZERS, "none"],
                        help="optimizer of the step, or none for forward and backward only (default adamw)")
    parser.add_argument("--rank", type=int, default=None, help="rank of the low-rank optimizers (default 128)")
    parser.add_argument("--lean", action="store_true", help="swap in the memory-lean companions (lt.apply_lean)")
    parser.add_argument("--lora-rank", "--lora", dest="lora_rank", type=int, default=None, metavar="RANK",
                        help="add LoRA adapters of this rank (default: none)")
    add_sampling_arguments(parser)
    parser.add_argument("--peak", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the peak (CPU: a fresh subprocess runs the step; default on)")
    parser.add_argument("--top", type=int, default=10, help="modules listed by name (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0)


def conversions(args: argparse.Namespace) -> tuple:
    """LoRA, sampling and lean conversions as picklable callables: the subprocess that measures the
    CPU peak rebuilds the model and applies the same ones."""
    from leantrain.convert import conversions as run_conversions

    return run_conversions(args.lora_rank, sampling_config(args), args.lean)


def run(args: argparse.Namespace) -> int:
    from leantrain.memory import measure_memory
    from leantrain.recipes.step_spec import StepSpec

    optimizer = None if args.optim == "none" else args.optim
    spec = StepSpec(args.model, args.batch_size, args.seq_len, optimizer, conversions(args), args.seed, args.rank)
    model, batch, optimizer = spec()
    report = measure_memory(model, batch, optimizer, peak=args.peak, peak_builder=spec)
    if args.json:
        print(json.dumps({"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len,
                          "optimizer": args.optim, "lora_rank": args.lora_rank, "sampling": args.sampling,
                          "lean": args.lean, **report.to_dict()}, indent=2))
    else:
        print(f"leantrain memory: {args.model}, batch {args.batch_size} x {args.seq_len} tokens, "
              f"optimizer {args.optim}, LoRA {args.lora_rank or 'off'}, sampling {args.sampling or 'off'}, "
              f"lean {'on' if args.lean else 'off'}")
        print(report.to_table(top=args.top))
    return 0
