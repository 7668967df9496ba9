"""Full fine-tuning vs WTA-CRS vs lean vs LoRA, in the layout of the WTA-CRS paper's Tables 1 and 2.

1. memory — one full training step (forward, backward, AdamW) of BERT-base (random weights from
   BertConfig, fp32, eager attention, dropout 0.1) at batch 64 x 128 for each column: the
   accounting (parameters, gradients, optimizer states, bytes saved for backward) and the CPU
   peak of the step measured in a fresh subprocess (DESIGN.md). The largest batch that fits a
   budget comes from forward + backward peaks at batch 16 and 64 (affine in the batch size).
2. accuracy — test accuracy on BBC News (MiniLM-L6, ``--epochs``, ``--max-train`` articles; 0 = all),
   3 seeds, mean ± std.
3. speed — one training step of each column relative to full fine-tuning, interleaved repeats.

Run:  .venv/bin/python benchmarks/finetune.py [--only memory|accuracy|speed]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace

import torch
from timing import interleaved_medians, timed_training_step

from leantrain.config import MemoryOptions, OptimConfig
from leantrain.config.finetune import DEFAULT_LR, FinetuneConfig
from leantrain.data.classification import load_classification_data
from leantrain.memory import measure_memory
from leantrain.memory.peak import cpu_peak_in_subprocess
from leantrain.models.presets import build_model, random_batch
from leantrain.plan.step_spec import STEP_LR, StepSpec
from leantrain.recipes.finetune import parse_run, run_finetune

GIB = 2**30
ADAMW = OptimConfig("adamw", lr=STEP_LR)  # the optimizer of the memory and speed tables
MEMORY_COLUMNS = ("full", "full+wtacrs@0.3", "full+wtacrs@0.1", "full+wtacrs@0.3+lean", "lora",
                  "lora+wtacrs@0.3+lean")
# The lean companions are exact, so they leave accuracy as it is; they are timed, not re-trained.
ACCURACY_COLUMNS = ("full", "full+wtacrs@0.3", "full+wtacrs@0.1", "lora", "lora+wtacrs@0.3")
SPEED_COLUMNS = ("full", "full+wtacrs@0.3", "full+wtacrs@0.3+lean", "lora", "lora+wtacrs@0.3+lean")


def memory_table(args) -> None:
    print(f"\n### Peak training memory: BERT-base, batch {args.batch_size} x {args.seq_len}, fp32, AdamW "
          f"(CPU peak of one step in a fresh subprocess)\n")
    print("| run | params+grads+opt | saved activations | accounted total | vs full | measured step peak "
          f"| vs full | max batch in {args.budget_gib} GiB | vs full |")
    print("|---|---|---|---|---|---|---|---|---|")
    base_total = base_peak = base_batch = None
    for spec in MEMORY_COLUMNS:
        memory = run_memory(spec)
        model = build_model("bert-base", args.seed)
        memory.apply(model)
        batch = random_batch(model, args.batch_size, args.seq_len, args.seed)
        report = measure_memory(model, batch, ADAMW.build(model),
                                peak_builder=StepSpec("bert-base", args.batch_size, args.seq_len, ADAMW, memory,
                                                      args.seed))
        del model
        state = report.parameter_bytes + report.gradient_bytes + report.optimizer_state_bytes
        total = state + report.saved.total
        peak = report.peak.step_bytes + report.parameter_bytes
        max_batch = largest_batch(memory, peak, report.parameter_bytes, args)
        base_total, base_peak, base_batch = base_total or total, base_peak or peak, base_batch or max_batch
        print(f"| {parse_run(spec, FinetuneConfig()).label} | {state / GIB:.2f} GiB | "
              f"{report.saved.total / GIB:.2f} GiB | {total / GIB:.2f} GiB | {base_total / total:.2f}x | "
              f"{peak / GIB:.2f} GiB | {base_peak / peak:.2f}x | {max_batch} | {max_batch / base_batch:.2f}x |",
              flush=True)
    print("\n(measured step peak = parameters + the step's peak RSS above what was resident before it; max batch: "
          f"the forward + backward peak is affine in the batch, fitted at batch {args.small_batch} and "
          f"{args.batch_size}; the optimizer step's own peak does not grow with the batch)")


def run_memory(spec: str) -> MemoryOptions:
    """The memory parts of the recipe's run ``spec`` ("full", "lora+wtacrs@0.3+lean", ...), sampling seeded 0."""
    return parse_run(spec, FinetuneConfig()).resolved().memory


def largest_batch(memory: MemoryOptions, step_peak: int, parameter_bytes: int, args) -> int:
    """The largest batch whose step fits ``args.budget_gib``. A step peaks either in forward + backward
    (activations, affine in the batch) or in the optimizer step (parameters, gradients and states,
    flat in the batch), so: fit the forward + backward peak at two batches; if it fits at the larger
    one but the whole step there does not, the optimizer step alone is over budget."""
    def backward_peak(batch_size: int) -> int:
        spec = StepSpec("bert-base", batch_size, args.seq_len, None, memory, args.seed)
        return cpu_peak_in_subprocess(spec).step_bytes + parameter_bytes

    small, large = backward_peak(args.small_batch), backward_peak(args.batch_size)
    per_example = (large - small) / (args.batch_size - args.small_batch)
    fitted = int((args.budget_gib * GIB - (large - per_example * args.batch_size)) // per_example)
    return 0 if fitted >= args.batch_size and step_peak > args.budget_gib * GIB else fitted


def accuracy_table(args) -> None:
    data = load_classification_data("bbc")
    max_train = args.max_train or None
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    n_train = min(max_train or len(data.train), len(data.train))
    lrs = {"full": args.lr or DEFAULT_LR["full"], "lora": args.lora_lr or DEFAULT_LR["lora"]}
    print(f"\n### Test accuracy on BBC News (MiniLM-L6, {n_train} training / {len(data.test)} test articles, "
          f"{args.epochs} epoch(s), batch 16 x 128, lr {lrs['full']:g} (LoRA {lrs['lora']:g}), "
          f"seeds {seeds})\n")
    print("| run | accuracy (mean ± std) | vs first row | per seed |")
    print("|---|---|---|---|")
    base = None
    for spec in args.columns or ACCURACY_COLUMNS:
        accuracies = []
        lr = lrs["lora"] if spec.startswith("lora") else lrs["full"]
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="leantrain-bench-finetune-") as folder:
                base = FinetuneConfig(max_train_examples=max_train, epochs=args.epochs)
                base = replace(base, engine=replace(base.engine, output_dir=folder, seed=seed),
                               optim=replace(base.optim, lr=lr))
                accuracies.append(100 * run_finetune(parse_run(spec, base), data=data, show_bar=False).accuracy)
        mean = statistics.fmean(accuracies)
        base = base if base is not None else mean
        print(f"| {parse_run(spec, FinetuneConfig()).label} | {mean:.2f} ± {statistics.stdev(accuracies):.2f} | "
              f"{mean - base:+.2f} | {', '.join(f'{a:.2f}' for a in accuracies)} |", flush=True)


def speed_table(args) -> None:
    from leantrain.recipes.finetune import load_classifier

    runs = {}
    for spec in SPEED_COLUMNS:
        torch.manual_seed(args.seed)
        model, _ = load_classifier("minilm", 5)
        run_memory(spec).apply(model)
        runs[parse_run(spec, FinetuneConfig()).label] = (model.train(), ADAMW.build(model))
    batch = random_batch(next(iter(runs.values()))[0], 16, 128, args.seed)

    medians = interleaved_medians(lambda label: timed_training_step(*runs[label], batch), runs, args.repeats)
    print(f"\n### Step time (MiniLM-L6, batch 16 x 128, fp32, AdamW, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved repeats)\n")
    print("| run | median step | vs full |")
    print("|---|---|---|")
    for label, t in medians.items():
        print(f"| {label} | {t * 1000:.0f} ms | {t / medians['full']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["memory", "accuracy", "speed"], default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--small-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--budget-gib", type=float, default=8.0)
    parser.add_argument("--seeds", type=int, default=3, help="accuracy: how many seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="accuracy: seeds first-seed, first-seed + 1, …")
    parser.add_argument("--max-train", type=int, default=600, help="training articles (0: all 1,702)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None, help="full runs' lr (default: the recipe's DEFAULT_LR)")
    parser.add_argument("--lora-lr", type=float, default=None, help="LoRA runs' lr (default: the recipe's DEFAULT_LR)")
    parser.add_argument("--columns", nargs="+", default=None, help="accuracy columns (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, table in [("memory", memory_table), ("accuracy", accuracy_table), ("speed", speed_table)]:
        if args.only in (None, name):
            table(args)


if __name__ == "__main__":
    main()
