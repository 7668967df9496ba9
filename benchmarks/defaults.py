"""Choose `leantrain finetune`'s per-mode defaults (peak lr, warmup) on one task, check them on another.

1. tune — for each mode (full, LoRA), every LR:WARMUP setting of its grid (``--full-grid``,
   ``--lora-grid``; warmup as a fraction of the run) on BBC News with ``--tune-seeds`` seeds. The
   choice per mode: the highest worst-seed test accuracy among settings where no seed failed;
   settings within ``--tie`` accuracy points of it count as tied, and the tie goes to the smaller
   lr, then the longer warmup (a failure to learn comes from too large a step, not too small).
2. verify — the chosen settings and the old ones (lr 5e-4 for both modes, no warmup) on a different
   task, KJV book groups ("kjv-books": Bible passages in 6 classes), with ``--verify-seeds`` seeds.

Every run: MiniLM-L6, exact gradients, AdamW, linear decay, 1 epoch, batch 16, the first
``--max-train`` / ``--max-test`` examples of the seed's split. A run *failed to learn* when the mean
training loss over its last quarter of updates is above 90% of ln(classes) (the loss of a uniform
guess), or its test accuracy is below 1.5x chance (1.5 / classes).

Results go to ``--out`` as JSONL, one line per run; a run already there is read back, not rerun.

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/defaults.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from leantrain.config.finetune import FinetuneConfig
from leantrain.data.classification import load_classification_data
from leantrain.recipes.finetune import parse_run, run_finetune

OLD = {"full": (5e-4, 0.0), "lora": (5e-4, 0.0)}  # the one shared default before per-mode defaults
FAIL_LOSS = 0.9   # x ln(classes)
FAIL_ACCURACY = 1.5  # x chance
# (lr, warmup) settings. The grids are sparse to fit 2 shared CPU cores: warmup is tried with and
# without at the old lr 5e-4 (and 5e-3 for LoRA), where a failure to learn would show.
FULL_GRID = [(5e-5, 0.0), (5e-5, 0.1), (1e-4, 0.1), (2e-4, 0.1), (5e-4, 0.0), (5e-4, 0.1)]
LORA_GRID = [(2e-3, 0.1), (5e-3, 0.0), (5e-3, 0.1), (1e-2, 0.1), (2e-2, 0.1)]


def setting(spec: str) -> tuple[float, float]:
    lr, _, warmup = spec.partition(":")
    return float(lr), float(warmup or 0.0)


def run_key(mode: str, lr: float, warmup: float, task: str, seed: int) -> str:
    return f"{mode} lr={lr:g} warmup={warmup:g} {task} seed={seed}"


class Runner:
    """Runs one setting on one task and seed, or reads it back from the results file."""

    def __init__(self, args) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.done = {}
        if self.out.is_file():
            for line in self.out.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.done[record["key"]] = record
        self.data = {}

    def __call__(self, mode: str, lr: float, warmup: float, task: str, seed: int) -> dict:
        key = run_key(mode, lr, warmup, task, seed)
        if key in self.done:
            return self.done[key]
        if (task, seed) not in self.data:
            self.data[task, seed] = load_classification_data(task, seed=seed)
        data = self.data[task, seed]
        seq_len = self.args.bbc_seq_len if task == "bbc" else self.args.seq_len
        losses = []
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="leantrain-bench-defaults-") as folder:
            base = FinetuneConfig(data=task, warmup=warmup, seq_len=seq_len, epochs=1,
                                  batch_size=self.args.batch_size, max_train_examples=self.args.max_train,
                                  max_test_examples=self.args.max_test)
            base = replace(base, engine=replace(base.engine, output_dir=folder, seed=seed),
                           optim=replace(base.optim, lr=lr))
            result = run_finetune(parse_run(mode, base), data=data, show_bar=False,
                                  on_record=lambda r: losses.append(r["loss"]) if "loss" in r else None)
        classes = len(data.label_names)
        last = statistics.fmean(losses[-max(1, len(losses) // 4):])
        record = {"key": key, "mode": mode, "lr": lr, "warmup": warmup, "task": task, "seed": seed,
                  "classes": classes, "accuracy": result.accuracy, "first_loss": losses[0], "last_loss": last,
                  "updates": len(losses), "seconds": time.perf_counter() - started}
        record["failed"] = failed(record)
        with self.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.done[key] = record
        print(f"  {key}: accuracy {record['accuracy']:.3f}, loss {record['first_loss']:.3f} -> "
              f"{record['last_loss']:.3f}{' FAILED' if record['failed'] else ''} ({record['seconds']:.0f} s)",
              flush=True)
        return record


def failed(record: dict) -> bool:
    classes = record["classes"]
    return record["last_loss"] > FAIL_LOSS * math.log(classes) or record["accuracy"] < FAIL_ACCURACY / classes


def table(title: str, rows: list[tuple[str, float, float, str, list[dict]]]) -> None:
    print(f"\n### {title}\n")
    print("| mode | lr | warmup | task | per seed: test accuracy (training loss first -> last quarter) "
          "| mean accuracy | worst | failed |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, lr, warmup, task, records in rows:
        seeds = "; ".join(f"s{r['seed']}: {100 * r['accuracy']:.1f} ({r['first_loss']:.2f} -> {r['last_loss']:.2f})"
                          f"{' **failed**' if r['failed'] else ''}" for r in records)
        accuracies = [100 * r["accuracy"] for r in records]
        print(f"| {mode} | {lr:g} | {warmup:g} | {task} | {seeds} | {statistics.fmean(accuracies):.1f} | "
              f"{min(accuracies):.1f} | {sum(r['failed'] for r in records)}/{len(records)} |", flush=True)


def choose(grid: dict[tuple[float, float], list[dict]], tie: float) -> tuple[float, float]:
    """The rule in the module docstring: best worst-seed accuracy among settings without a failure;
    within ``tie`` points of it, the smaller lr, then the longer warmup."""
    ok = {setting: min(100 * r["accuracy"] for r in records)
          for setting, records in grid.items() if not any(r["failed"] for r in records)}
    if not ok:
        raise SystemExit("every setting of the grid failed on some seed: widen the grid")
    best = max(ok.values())
    tied = [setting for setting, worst in ok.items() if worst >= best - tie]
    return min(tied, key=lambda s: (s[0], -s[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tune", "verify"], default=None)
    parser.add_argument("--full-grid", type=setting, nargs="+", default=FULL_GRID, metavar="LR:WARMUP")
    parser.add_argument("--lora-grid", type=setting, nargs="+", default=LORA_GRID, metavar="LR:WARMUP")
    parser.add_argument("--tune-task", default="bbc")
    parser.add_argument("--verify-task", default="kjv-books")
    parser.add_argument("--tune-seeds", type=int, default=2)
    parser.add_argument("--verify-seeds", type=int, default=3)
    parser.add_argument("--tie", type=float, default=1.0, help="accuracy points within which settings tie")
    parser.add_argument("--full", type=float, nargs=2, default=None, metavar=("LR", "WARMUP"),
                        help="verify: this full setting instead of the tuned one")
    parser.add_argument("--lora", type=float, nargs=2, default=None, metavar=("LR", "WARMUP"),
                        help="verify: this LoRA setting instead of the tuned one")
    parser.add_argument("--old", nargs="*", choices=["full", "lora"], default=["full", "lora"],
                        help="verify: the modes whose old setting is run too")
    parser.add_argument("--max-train", type=int, default=600)
    parser.add_argument("--max-test", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bbc-seq-len", type=int, default=128, help="tokens per BBC article")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per example of the other task")
    parser.add_argument("--out", default="runs/defaults/results.jsonl")
    args = parser.parse_args()
    run = Runner(args)
    print(f"failed to learn: last-quarter training loss > {FAIL_LOSS:g} x ln(classes) or test accuracy < "
          f"{FAIL_ACCURACY:g} x chance; {args.max_train} training / {args.max_test} test examples, 1 epoch, "
          f"batch {args.batch_size}", flush=True)

    chosen = {"full": args.full, "lora": args.lora}
    grids = {"full": args.full_grid, "lora": args.lora_grid}
    tune_seeds = list(range(args.tune_seeds))
    if args.only in (None, "tune") or None in chosen.values():
        rows = []
        for mode in ("full", "lora"):
            grid = {}
            for lr, warmup in grids[mode]:
                print(f"tune {mode} lr {lr:g} warmup {warmup:g} on {args.tune_task}", flush=True)
                grid[lr, warmup] = [run(mode, lr, warmup, args.tune_task, seed) for seed in tune_seeds]
                rows.append((mode, lr, warmup, args.tune_task, grid[lr, warmup]))
            picked = choose(grid, args.tie)
            chosen[mode] = chosen[mode] or picked
            print(f"chosen on {args.tune_task} for {mode}: lr {picked[0]:g}, warmup {picked[1]:g}", flush=True)
        table(f"Tuning grid on {args.tune_task} (seeds {tune_seeds})", rows)
        print(f"\nchosen: full lr {chosen['full'][0]:g} warmup {chosen['full'][1]:g}; "
              f"LoRA lr {chosen['lora'][0]:g} warmup {chosen['lora'][1]:g}")
    if args.only in (None, "verify"):
        seeds = list(range(args.verify_seeds))
        rows = []
        for mode in ("full", "lora"):
            settings = [("old", OLD[mode])] if mode in args.old else []
            for name, (lr, warmup) in [*settings, ("chosen", tuple(chosen[mode]))]:
                print(f"verify {mode} ({name}) lr {lr:g} warmup {warmup:g} on {args.verify_task}", flush=True)
                rows.append((f"{mode} ({name})", lr, warmup, args.verify_task,
                             [run(mode, lr, warmup, args.verify_task, seed) for seed in seeds]))
        table(f"Check on {args.verify_task} (seeds {seeds})", rows)


if __name__ == "__main__":
    main()
