"""`leantrain memory`: what one training step of a model holds, by module, and its measured peak."""

from __future__ import annotations

import argparse
import json

from leantrain.names import METHODS, MODEL_PRESETS, OPTIMIZERS

NAME = "memory"
HELP = "bytes one training step keeps (saved activations by module, parameters, gradients, optimizer) and its peak"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"a preset ({', '.join(MODEL_PRESETS)}), minilm, or a HF model folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--optimizer", default="adamw", choices=[*OPTIMIZERS, "none"],
                        help="optimizer of the step, or none for forward and backward only (default adamw)")
    parser.add_argument("--rank", type=int, default=128, help="rank of the low-rank optimizers (default 128)")
    parser.add_argument("--lean", action="store_true", help="swap in the memory-lean companions (lt.apply_lean)")
    parser.add_argument("--lora", type=int, default=None, metavar="RANK", help="add LoRA adapters of this rank")
    parser.add_argument("--sampling", default=None, choices=METHODS,
                        help="sample the 'paper' preset's linear layers (lt.apply_sampling)")
    parser.add_argument("--budget", type=float, default=0.3, help="sampling budget rho in (0, 1] (default 0.3)")
    parser.add_argument("--peak", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the peak (CPU: a fresh subprocess runs the step; default on)")
    parser.add_argument("--top", type=int, default=10, help="modules listed by name (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0)


def conversions(args: argparse.Namespace) -> tuple:
    """LoRA, sampling and lean conversions as picklable callables: the subprocess that measures the
    CPU peak rebuilds the model and applies the same ones."""
    from leantrain.convert import conversions as run_conversions
    from leantrain.sampling import SamplingConfig

    sampling = None if args.sampling is None else SamplingConfig(args.sampling, args.budget, seed=args.seed)
    return run_conversions(args.lora, sampling, args.lean)


def run(args: argparse.Namespace) -> int:
    from leantrain.memory import measure_memory
    from leantrain.memory.spec import StepSpec

    optimizer = None if args.optimizer == "none" else args.optimizer
    spec = StepSpec(args.model, args.batch_size, args.seq_len, optimizer, conversions(args), args.seed, args.rank)
    model, batch, optimizer = spec()
    report = measure_memory(model, batch, optimizer, peak=args.peak, peak_builder=spec)
    if args.json:
        print(json.dumps({"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len,
                          "optimizer": args.optimizer, "lora": args.lora, "sampling": args.sampling,
                          "budget": args.budget, "lean": args.lean, **report.to_dict()}, indent=2))
    else:
        sampling = "off" if args.sampling is None else f"{args.sampling}@{args.budget}"
        print(f"leantrain memory: {args.model}, batch {args.batch_size} x {args.seq_len} tokens, "
              f"optimizer {args.optimizer}, LoRA {args.lora or 'off'}, sampling {sampling}, "
              f"lean {'on' if args.lean else 'off'}")
        print(report.to_table(top=args.top))
    return 0
