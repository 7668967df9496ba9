"""Learning-rate schedules at a fixed token budget on the King James Bible, and the loss-curve
predictor: cosine vs WSD vs Power vs linear decay (and constant, for the predictor), two seeds;
the scaling law with LR annealing fitted on the constant + cosine runs predicts the final
validation loss of the others; and hard-sample batches (δ = 0.5) vs plain, both WSD, at equal steps.

All runs share one setup (``leantrain.recipes.pretrain``): Llama preset, BPE tokenizer trained on
the KJV, AdamW (β = 0.9/0.95, weight decay 0.1, clip 1.0), peak lr, 5% warmup, 20% decay for WSD
("1-sqrt") and Power ("exp"); validation on the last 5% of the corpus. Power uses the paper's
a = 4, b = −0.51 with β = the batch size in sequences.

Run:  .venv/bin/python benchmarks/schedules.py [--size 1m] [--tokens 300000] [--seeds 0 1] [--reuse]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from transformers.utils import logging

from leantrain.config.fields import to_dict
from leantrain.config.pretrain import PretrainConfig
from leantrain.io import read_metrics
from leantrain.recipes.pretrain import pretrain
from leantrain.schedules.predictor import LoggedRun, fit_loss_curve

SCHEDULES = ("constant", "cosine", "wsd", "power", "linear")


def run(config: PretrainConfig, reuse: bool) -> list[dict]:
    folder = Path(config.engine.output_dir)
    done = (folder / "summary.json").is_file() and (folder / "config.json").is_file()
    if not (reuse and done and json.loads((folder / "config.json").read_text()) == json.loads(
            json.dumps(to_dict(config.resolved())))):
        pretrain(config, show_bar=False)
    return read_metrics(folder / "metrics.jsonl")


def final(records: list[dict], key: str = "val_loss") -> float:
    return [r[key] for r in records if key in r][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1m")
    parser.add_argument("--tokens", type=int, default=300_000)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/bench-schedules")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs whose config matches")
    args = parser.parse_args()
    logging.set_verbosity_error()
    logging.disable_progress_bar()

    def config(schedule: str, seed: int, hard_fraction: float = 1.0) -> PretrainConfig:
        tag = f"{schedule}-hard{hard_fraction:g}" if hard_fraction < 1 else schedule
        defaults = PretrainConfig()
        return PretrainConfig(size=args.size, seq_len=args.seq_len, batch_size=args.batch_size,
                              vocab_size=args.vocab_size, tokens=args.tokens, schedule=schedule,
                              hard_fraction=hard_fraction, eval_every=25, eval_batches=16,
                              engine=replace(defaults.engine, output_dir=f"{args.out}/{tag}-seed{seed}", seed=seed,
                                             save_every=10_000),
                              optim=replace(defaults.optim, lr=args.lr))

    first = config("cosine", args.seeds[0])
    print(f"KJV, Llama {args.size}, {first.total_steps} updates x {first.tokens_per_step:,} tokens "
          f"({first.total_steps * first.tokens_per_step:,} tokens), peak lr {args.lr:g}, seeds {args.seeds}")
    logs = {(name, seed): run(config(name, seed), args.reuse) for seed in args.seeds for name in SCHEDULES}

    print("\n| schedule | " + " | ".join(f"val loss seed {s}" for s in args.seeds) + " | mean |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for name in sorted(SCHEDULES, key=lambda n: sum(final(logs[n, s]) for s in args.seeds)):
        losses = [final(logs[name, s]) for s in args.seeds]
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in losses) + f" | {sum(losses) / len(losses):.4f} |")

    print("\nloss-curve law fitted on constant + cosine validation curves (lambda = 0.999)")
    print("| seed | target | predicted final val loss | actual | error |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        fit = fit_loss_curve([LoggedRun.from_metrics(logs[name, seed]) for name in ("constant", "cosine")])
        for target in ("wsd", "power", "linear"):
            actual = final(logs[target, seed])
            predicted = float(fit.predict(LoggedRun.from_metrics(logs[target, seed]).lrs)[-1])
            error = 100 * (predicted - actual) / actual
            print(f"| {seed} | {target} | {predicted:.4f} | {actual:.4f} | {error:+.2f}% |")

    print("\nhard-sample batches (delta = 0.5: train on the harder of 2 candidates) vs plain, WSD, equal steps")
    print("| seed | plain val loss | hard val loss | plain s | hard s |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        hard_config = config("wsd", seed, hard_fraction=0.5)
        hard = run(hard_config, args.reuse)
        seconds = [json.loads((Path(c.engine.output_dir) / "summary.json").read_text())["train_seconds"]
                   for c in (config("wsd", seed), hard_config)]
        print(f"| {seed} | {final(logs['wsd', seed]):.4f} | {final(hard):.4f} | {seconds[0]:.0f} | {seconds[1]:.0f} |")


if __name__ == "__main__":
    main()
