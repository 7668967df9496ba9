"""`leantrain memory`: what one training step holds, by module, and its measured peak; with
``--memory-budget``, the planner's choice of memory parts for the budget, then that step measured."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field

from leantrain.cli.flags import add_section_arguments, given
from leantrain.config import MemoryOptions, OptimConfig
from leantrain.config.fields import with_settings
from leantrain.names import MODEL_NAMES

MIB = 2**20
NAME = "memory"
HELP = ("bytes one training step keeps (saved activations by module, parameters, gradients, optimizer), its "
        "measured peak and total; --memory-budget SIZE plans the memory parts that fit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"a name ({', '.join(MODEL_NAMES)}) or a HF model folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--peak", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the peak (CPU: a fresh subprocess runs the step; default on)")
    parser.add_argument("--top", type=int, default=10, help="modules listed by name (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0)
    # the optimizer of the step, or "none" for forward and backward only
    add_section_arguments(parser, "optim", StepSections().optim, skip=("lr",), extra_choices={"name": ("none",)})
    add_section_arguments(parser, "memory", MemoryOptions())


BIG = 2**30  # weights above this are not built in the command's own process: only the peak subprocess builds them


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from leantrain.memory import measure_memory
    from leantrain.memory.available import check_fits
    from leantrain.memory.peak import cpu_peak_in_subprocess
    from leantrain.plan import StepSpec, plan_memory
    from leantrain.plan.planner import estimate_step

    settings = {k: v for k, v in given(args).items() if k.startswith(("optim.", "memory."))}
    name = settings.pop("optim.name", "adamw")
    sections = with_settings(StepSections(), settings)
    optim = None if name == "none" else replace(sections.optim, name=name)
    memory, plan = sections.memory, None
    if optim is None and (sections.optim.step_in_backward or sections.optim.state_bits != 32):
        raise ValueError("--step-in-backward and --state-bits 8 are optimizer parts; --optim none has none")
    if memory.budget is not None:
        if optim is None:
            raise ValueError("--memory-budget plans a whole training step: it needs an optimizer, not --optim none")
        plan = plan_memory(args.model, args.batch_size, args.seq_len, memory.budget, memory=memory, optim=optim)
        memory, optim = plan.memory, plan.optim
    spec = StepSpec(args.model, args.batch_size, args.seq_len, optim, memory, args.seed)
    parts = memory.describe() + (", no optimizer" if optim is None else f" + {optim.describe()}")
    estimate = None if optim is None else (plan.chosen if plan is not None else estimate_step(
        args.model, args.batch_size, args.seq_len, memory, optim))
    if estimate is not None:  # never start a step that would not fit: say so instead
        check_fits(estimate.total, f"one step of {args.model} ({parts})")
    if estimate is not None and estimate.weights > BIG:
        peak = cpu_peak_in_subprocess(spec) if args.peak else None
        result = {"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len, "memory": parts,
                  "peak": None if peak is None else asdict(peak)}
    else:
        model, batch, optimizer = spec()
        report = measure_memory(model, batch, optimizer, peak=args.peak, peak_builder=spec)
        result = {"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len,
                  "optimizer": "none" if optim is None else optim.name, "lora_rank": memory.lora,
                  "sampling": None if memory.sampling is None else memory.sampling.spec, "lean": memory.lean,
                  "memory": parts, **report.to_dict()}
    if estimate is not None:
        result["estimate"] = {**{key: getattr(estimate, key) for key in ("weights", "gradients", "states",
                                                                         "activations", "transient")},
                              "total": estimate.total}
    if plan is not None:
        result["plan"] = {"budget_bytes": plan.budget, "margin": plan.margin, "estimated_total_bytes": estimate.total}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    if plan is not None:
        print(plan.explain(), end="\n\n")
    print(f"leantrain memory: {args.model}, batch {args.batch_size} x {args.seq_len} tokens, {parts}")
    if "saved" in result:
        print(report.to_table(top=args.top))
    if estimate is not None:
        print(f"estimated total {estimate.total / MIB:,.0f} MiB: weights {estimate.weights / MIB:,.0f}, gradients "
              f"{estimate.gradients / MIB:,.0f}, optimizer states {estimate.states / MIB:,.0f}, activations "
              f"{estimate.activations / MIB:,.0f}, transients {estimate.transient / MIB:,.0f}")
    if result.get("peak") and "saved" not in result:
        print(f"measured total (peak above the RSS before the model was built): "
              f"{result['peak']['total_bytes'] / MIB:,.0f} MiB")
    return 0


@dataclass(frozen=True)
class StepSections:
    """The two sections of a measured step (its learning rate is ``StepSpec``'s: it changes no byte)."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    memory: MemoryOptions = field(default_factory=MemoryOptions)
