"""One process vs two (torchrun, DDP and FSDP2) on the pretraining recipe: loss curves and time per update.

The same run — Llama 5m on the King James Bible, the same global batch, seed and schedule — in one
process (2 threads, and 1 thread) and under ``torchrun --nproc_per_node 2`` (1 thread each) with DDP
and with FSDP2, interleaved over repeats. Printed: the training loss at a few updates for each
layout and the largest relative difference from one process over all updates; the median seconds
per update (the loop and one final evaluation, from summary.json) and the speed-up over one
process with 2 threads.
The tokenizer is trained once and shared. Run it on an otherwise idle machine.

Run:  .venv/bin/python -u benchmarks/processes.py [--size 5m] [--tokens 245760] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from leantrain.io import read_metrics

# name -> (layout under torchrun, or None for one plain process; threads per process)
LAYOUTS = {"1 process, 2 threads": (None, 2), "1 process, 1 thread": (None, 1),
           "2 processes, DDP": ("ddp", 1), "2 processes, FSDP2": ("fsdp2", 1)}
REFERENCE = "1 process, 2 threads"


def command(layout: str | None, args: argparse.Namespace, folder: Path, tokenizer: Path | None) -> list[str]:
    common = ["-m", "leantrain", "pretrain", "--size", args.size, "--tokens", str(args.tokens), "--batch-size", "16",
              "--seq-len", "128", "--max-chars", str(args.max_chars), "--eval-every", "1000000",
              "--save-every", "1000000", "--output-dir", str(folder)]
    if tokenizer is not None:
        common += ["--tokenizer", str(tokenizer)]
    if layout is None:
        return [sys.executable, *common]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    return [torchrun, "--standalone", "--nproc_per_node", "2", *common, "--layout", layout]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="5m")
    parser.add_argument("--tokens", type=int, default=16 * 128 * 120)
    parser.add_argument("--max-chars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    curves: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="leantrain-processes-") as root:
        tokenizer = None
        for repeat in range(args.repeats):
            for index, (name, (layout, threads)) in enumerate(LAYOUTS.items()):
                folder = Path(root) / f"{repeat}-{index}"
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                done = subprocess.run(command(layout, args, folder, tokenizer), env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-4000:]}")
                tokenizer = tokenizer or folder / "tokenizer.json"
                summary = json.loads((folder / "summary.json").read_text())
                seconds[name].append(summary["train_seconds"] / summary["steps"])
                curves[name] = [r["loss"] for r in read_metrics(folder / "metrics.jsonl") if "loss" in r]
                print(f"repeat {repeat}: {name}: {seconds[name][-1]:.3f} s/update", flush=True)
    reference = curves[REFERENCE]
    marks = [1, len(reference) // 4, len(reference) // 2, len(reference)]
    print(f"\n{'layout':<22} " + " ".join(f"{'loss@' + str(m):>9}" for m in marks)
          + f" {'max rel diff':>12} {'s/update':>9} {'speed-up':>9}")
    base = statistics.median(seconds[REFERENCE])
    for name, curve in curves.items():
        diff = max(abs(a - b) / abs(b) for a, b in zip(curve, reference, strict=True))
        median = statistics.median(seconds[name])
        print(f"{name:<22} " + " ".join(f"{curve[m - 1]:>9.4f}" for m in marks)
              + f" {diff:>12.1e} {median:>9.3f} {base / median:>8.2f}x")


if __name__ == "__main__":
    main()
