"""`leantrain memory`: what one training step holds, by module, and its measured peak; with
``--memory-budget``, the planner's choice of memory parts for the budget, then that step measured."""

from __future__ import annotations

import argparse
import json

from leantrain.cli.common import add_memory_arguments, memory_options
from leantrain.names import MODEL_NAMES, OPTIMIZERS

NAME = "memory"
HELP = ("bytes one training step keeps (saved activations by module, parameters, gradients, optimizer), its "
        "measured peak and total; --memory-budget SIZE plans the memory parts that fit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"a name ({', '.join(MODEL_NAMES)}) or a HF model folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--optim", "--optimizer", dest="optim", default="adamw", choices=[*OPTIMIZERS, "none"],
                        help="optimizer of the step, or none for forward and backward only (default adamw)")
    parser.add_argument("--rank", type=int, default=None, help="rank of the low-rank optimizers (default 128)")
    add_memory_arguments(parser)
    parser.add_argument("--peak", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the peak (CPU: a fresh subprocess runs the step; default on)")
    parser.add_argument("--top", type=int, default=10, help="modules listed by name (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from leantrain.memory import measure_memory
    from leantrain.recipes.step_spec import StepSpec

    none = args.optim == "none"
    options = memory_options(args, "adamw" if none else args.optim)
    plan = None
    if args.memory_budget is not None:
        if none:
            raise ValueError("--memory-budget plans a whole training step: it needs an optimizer, not --optim none")
        from leantrain.memory.planner import plan_memory

        plan = plan_memory(args.model, args.batch_size, args.seq_len, args.memory_budget, base=options)
        options = plan.chosen
    spec = StepSpec.of(args.model, args.batch_size, args.seq_len, options, args.seed)
    if none:
        if options.step_in_backward or options.state_bits != 32:
            raise ValueError("--step-in-backward and --state-bits 8 are optimizer parts; --optim none has none")
        spec = replace(spec, optimizer=None)
    model, batch, optimizer = spec()
    report = measure_memory(model, batch, optimizer, peak=args.peak, peak_builder=spec)
    if args.json:
        result = {"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len,
                  "optimizer": args.optim, "lora_rank": options.lora, "sampling": args.sampling,
                  "lean": options.lean, "memory": options.describe(), **report.to_dict()}
        if plan is not None:
            result["plan"] = {"budget_bytes": plan.budget, "margin": plan.margin,
                              "estimated_total_bytes": next(e.total for e in plan.estimates if e.options == options)}
        print(json.dumps(result, indent=2, default=str))
    else:
        if plan is not None:
            print(plan.explain(), end="\n\n")
        print(f"leantrain memory: {args.model}, batch {args.batch_size} x {args.seq_len} tokens, "
              f"{options.describe() if not none else 'no optimizer'}")
        print(report.to_table(top=args.top))
    return 0
