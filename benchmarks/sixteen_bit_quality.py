"""Is quality traded away by 16-bit trained weights and the optimizer-state floor? Held-out figures after
the same run of fp32 AdamW, of bf16 weights with stochastic rounding (8-bit AdamW, and Adafactor without a
first moment), and of bf16 weights rounded to nearest, over seeds (issue "Full fine-tuning of
billion-parameter models").

``--task sft`` (default): ``leantrain sft``'s default run (SmolLM2-135M-Instruct on the built-in arithmetic
data with worked answers, one epoch of 42 updates, lr 2e-5 cosine, clipping at 1.0), held-out answer loss
and greedy exact-answer accuracy on 100 held-out problems. ``--task pretrain``: ``leantrain pretrain``'s
default run (a 5M Llama on the King James Bible, 2M tokens, WSD), the final validation loss. A seed is
``--seed``: it orders the data and draws the rounding (and in pretraining the initial weights). Every run
in its own temporary folder, one after the other.

Run:  .venv/bin/python benchmarks/sixteen_bit_quality.py [--task sft|pretrain] [--seeds 0 1 2] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from leantrain.config import OptimConfig
from leantrain.config.pretrain import PretrainConfig
from leantrain.config.sft import SFTConfig

CONFIGS = {
    "fp32 AdamW": OptimConfig(),
    "bf16 weights, stochastic rounding + 8-bit AdamW": OptimConfig(weights="bf16", state_bits=8),
    "bf16 weights, stochastic rounding + Adafactor (the state floor)": OptimConfig("adafactor", weights="bf16"),
    "bf16 weights, round to nearest + 8-bit AdamW": OptimConfig(weights="bf16", state_bits=8, rounding="nearest"),
}


def run(task: str, optim: OptimConfig, seed: int, folder: str) -> dict[str, float]:
    if task == "sft":
        from leantrain.recipes.sft import sft

        defaults = SFTConfig()
        config = replace(defaults, engine=replace(defaults.engine, output_dir=folder, seed=seed),
                         optim=replace(optim, lr=defaults.optim.lr))
        end = sft(config, show_bar=False).records[-1]
        return {"loss": end["heldout_loss"], "accuracy": end["heldout_accuracy"]}
    from leantrain.recipes.pretrain import pretrain

    defaults = PretrainConfig()
    config = replace(defaults, engine=replace(defaults.engine, output_dir=folder, seed=seed),
                     optim=replace(defaults.optim, name=optim.name, weights=optim.weights, state_bits=optim.state_bits,
                                   rounding=optim.rounding))
    return {"loss": pretrain(config, show_bar=False).val_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sft", choices=("sft", "pretrain"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", default=None, help="configurations whose name starts with one of these")
    args = parser.parse_args()
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    for name, optim in CONFIGS.items():
        if args.only is not None and not name.startswith(tuple(args.only)):
            continue
        for seed in args.seeds:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="leantrain-16bit-") as folder:
                result = run(args.task, optim, seed, folder)
            results.setdefault(name, []).append(result)
            print(f"  {name}, seed {seed}: {result} ({time.perf_counter() - started:.0f} s)", flush=True)
    metrics = list(next(iter(results.values()))[0])
    base = {metric: statistics.mean(r[metric] for r in next(iter(results.values()))) for metric in metrics}
    print(f"\n| configuration ({args.task}, seeds {', '.join(map(str, args.seeds))}) | "
          + " | ".join(f"held-out {metric} (mean ± sd) | vs the first" for metric in metrics) + " |")
    print("|---|" + "---|---|" * len(metrics))
    for name, rows in results.items():
        cells = []
        for metric in metrics:
            values = [r[metric] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f} | "
                         f"{100 * (statistics.mean(values) / base[metric] - 1):+.1f}%")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
