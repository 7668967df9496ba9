"""GRPO vs DARS-ET vs DARS-HW vs SELF (and DARS-B) from the same start at the same budget of generated
tokens, then pass@k (k = 1 … n) of every run on the same held-out problems, over seeds.

Every run trains SmolLM2-135M-Instruct on the built-in `arithmetic` problems (reasoning-gym chain_sum)
with the settings of ``shared_config`` (LoRA r = 16 on every linear layer, so that a CPU affords the runs, or with
``--full`` full fine-tuning with the memory parts and 8-bit states; the algorithms' own defaults otherwise)
until ``--token-budget`` tokens were generated. Then each run's
policy, and the starting model once, samples ``--n`` completions of each of the ``held_out`` problems
(the same seeded samples for every policy) and the unbiased pass@k is computed, with percentile bootstrap 95 %
intervals over the problems, and each algorithm's paired difference to GRPO beside the papers' direction; the
curves go to ``plot/lora/pass_at_k.png`` (``plot/full`` with ``--full``) under ``--out``. "rows with signal"
are the rows at an advantage other than 0, the ones the step trains. Runs and counts are kept under ``--out`` as
they finish: an interrupted benchmark resumes where it stopped, and ``--table`` prints the tables again.

Run:  .venv/bin/python benchmarks/rl.py --seeds 0 1 [--algos grpo dars-et dars-hw self] [--token-budget 8000] [--full]
      (on 2 cores: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py --seeds 0 & ... --seeds 1, one process a core)
      .venv/bin/python benchmarks/rl.py --seeds 0 1 --table
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np

from leantrain.config import MemoryOptions
from leantrain.config.rl import RLConfig
from leantrain.recipes.rl import load_policy, prepare_problems, rl
from leantrain.recipes.rl_eval import count_correct, ks_up_to, write_pass_at_k_report
from leantrain.rl.pass_at_k import mean_interval, pass_at_k_per_problem

ALGOS = ("grpo", "dars-et", "dars-hw", "self", "dars-b")
SHARED = {"max_new_tokens": 16, "generation_batch": 128, "eval_problems": 0, "eval_every": None, "steps": 1000,
          "held_out": 200}
START = "start"
FULL = "-full"  # a run label's suffix for full fine-tuning (``--full``)
PAPER_DIRECTION = {  # ../shared/research/rl_hyperfit.md: DARS (Yang et al. 2025), SELF (Nguyen et al. 2025)
    "dars-et": "pass@k at large k above GRPO's, pass@1 not below",
    "dars-hw": "pass@k at large k above GRPO's, pass@1 not below",
    "dars-b": "pass@1 and pass@k at large k above GRPO's",
    "self": "most of GRPO's pass@1 gain kept; pass@k at large k back to the start's or above",
}


def shared_config(folder: Path | None = None, seed: int = 0, full: bool = False, **fields) -> RLConfig:
    """``SHARED`` with ``fields`` and 8 micro-batches an update: LoRA r16 at lr 2e-4, or with ``full`` full
    fine-tuning with the recipe's memory parts and 8-bit AdamW states at lr 1e-5 (not tuned); the run folder
    ``folder`` (None: the recipe's) and seed ``seed``."""
    defaults = RLConfig()
    engine = replace(defaults.engine, grad_accum=8, seed=seed)
    if folder is not None:
        engine = replace(engine, output_dir=str(folder))
    if full:
        return RLConfig(**SHARED, **fields, engine=engine, optim=replace(defaults.optim, lr=1e-5, state_bits=8))
    return RLConfig(**SHARED, **fields, engine=engine, optim=replace(defaults.optim, lr=2e-4),
                    memory=MemoryOptions(lora=16))


def run_folder(out: Path, label: str, seed: int) -> Path:
    return out / f"{label}-s{seed}"


def train(out: Path, label: str, seed: int, budget: int) -> None:
    """Train the run ``label`` (an algorithm, with ``FULL`` after it for full fine-tuning) to ``budget`` tokens."""
    folder = run_folder(out, label, seed)
    if (folder / "summary.json").is_file():
        return
    algo = label.removesuffix(FULL)
    config = shared_config(folder, seed, full=label.endswith(FULL), algo=algo, token_budget=budget)
    resume = (folder / "checkpoint.safetensors").is_file()
    print(f"{label} seed {seed}: training to {budget:,} generated tokens{' (resuming)' if resume else ''}", flush=True)
    result = rl(config, resume=resume, show_bar=True)
    print(f"{label} seed {seed}: {result.steps} steps, {result.generated_tokens:,} tokens, {result.train_seconds:.0f}s",
          flush=True)


def counts_file(out: Path, label: str) -> Path:
    return out / "counts" / f"{label}.json"


def evaluate(out: Path, label: str, source: str, n: int) -> None:
    """Correct completions per held-out problem of ``source``: every run shares the data split (data_seed 0)."""
    path = counts_file(out, label)
    if path.is_file():
        return
    problems = prepare_problems(shared_config().resolved())[1]
    model, tokenizer, _ = load_policy(source)
    counts = count_correct(model, tokenizer, problems, n, max_new_tokens=SHARED["max_new_tokens"],
                           batch_size=SHARED["generation_batch"], seed=0, show_progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"n": counts.n, "correct": counts.correct.tolist(), "scored": counts.scored.tolist(),
                                "generated_tokens": counts.generated_tokens, "seconds": counts.seconds}))
    print(f"{label}: pass@1 {float(counts.correct.sum()) / (n * len(problems)):.3f} ({counts.seconds:.0f}s)",
          flush=True)


def per_problem(out: Path, label: str, k: int) -> np.ndarray:
    """pass@k of each held-out problem for the counts of ``label``."""
    record = json.loads(counts_file(out, label).read_text())
    return pass_at_k_per_problem(record["n"], record["correct"], k)


def samples(out: Path, label: str) -> int:
    return json.loads(counts_file(out, label).read_text())["n"]


def seed_mean(out: Path, algo: str, seeds: list[int], k: int) -> np.ndarray:
    """pass@k of each held-out problem, averaged over the runs of ``algo`` with ``seeds`` (the same problems)."""
    return np.mean([per_problem(out, f"{algo}-s{seed}", k) for seed in seeds], axis=0)


def with_interval(values: np.ndarray) -> str:
    low, high = mean_interval(values)
    return f"{values.mean():.3f} [{low:.3f}, {high:.3f}]"


def run_facts(out: Path, algo: str, seed: int) -> dict[str, float]:
    summary = json.loads((run_folder(out, algo, seed) / "summary.json").read_text())
    records = [json.loads(line) for line in (run_folder(out, algo, seed) / "metrics.jsonl").read_text().splitlines()]
    firsts = [r for r in records if "reward_mean" in r]
    facts = {"steps": summary["steps"], "tokens": summary["generated_tokens"], "seconds": summary["train_seconds"],
             "reward": statistics.fmean(r["reward_mean"] for r in firsts),
             "generation": sum(r["generation_seconds"] for r in firsts),
             "rollouts": statistics.fmean(r["rollouts"] for r in firsts),
             "signal": statistics.fmean(r.get("signal_rows", math.nan) for r in firsts)}
    saved = [r["second_saved"] for r in firsts if r.get("second_saved") == r.get("second_saved")
             and "second_saved" in r]
    if saved:
        facts["second_saved"] = statistics.fmean(saved)
    return facts


def finished_seeds(out: Path, algo: str, seeds: list[int]) -> list[int]:
    return [seed for seed in seeds if counts_file(out, f"{algo}-s{seed}").is_file()]


def table(out: Path, algos: list[str], seeds: list[int]) -> str:
    """pass@k of the start and each algorithm (the mean over its seeds, with a bootstrap 95 % interval over the
    problems of the seed-averaged per-problem values), and each algorithm's run facts."""
    ks = ks_up_to(samples(out, START))
    lines = ["| policy | " + " | ".join(f"pass@{k}" for k in ks)
             + " | RL steps | tokens | train s | rollouts / step | rows with signal / step | mean reward |",
             "|" + "---|" * (len(ks) + 7),
             "| start | " + " | ".join(with_interval(per_problem(out, START, k)) for k in ks) + " |" + " – |" * 6]
    for algo in algos:
        done = finished_seeds(out, algo, seeds)
        if not done:
            continue
        cells = [with_interval(seed_mean(out, algo, done, k)) for k in ks]
        facts = [run_facts(out, algo, seed) for seed in done]
        mean = {key: statistics.fmean(f[key] for f in facts) for key in facts[0]}
        extra = f", 2nd_saved {mean['second_saved']:.2f}" if "second_saved" in mean else ""
        lines.append(f"| {algo} ({len(done)} seed{'s' if len(done) > 1 else ''}) | " + " | ".join(cells)
                     + f" | {mean['steps']:.1f} | {mean['tokens']:,.0f} | {mean['seconds']:.0f} | "
                     f"{mean['rollouts']:.0f} | {mean['signal']:.0f} | {mean['reward']:.3f}{extra} |")
    return "\n".join(lines)


def verdict(low: float, high: float) -> str:
    return "higher" if low > 0 else "lower" if high < 0 else "no difference resolved"


def direction_table(out: Path, algos: list[str], seeds: list[int]) -> str:
    """Each algorithm against GRPO and the start on the same problems: the paired differences of pass@1 and of
    pass@k at the largest k, with bootstrap 95 % intervals over the problems, beside the papers' direction."""
    largest = ks_up_to(samples(out, START))[-1]
    lines = [f"| policy | the papers' direction | Δ pass@1 vs GRPO | Δ pass@{largest} vs GRPO | "
             f"Δ pass@{largest} vs start | ours |", "|---|---|---|---|---|---|"]
    for algo in algos:
        grpo_label = "grpo" + (FULL if algo.endswith(FULL) else "")  # full fine-tuning against full fine-tuning
        done, grpo = finished_seeds(out, algo, seeds), finished_seeds(out, grpo_label, seeds)
        if algo == grpo_label or not done or not grpo:
            continue
        cells, verdicts = [], []
        for k, against in ((1, "grpo"), (largest, "grpo"), (largest, START)):
            base = per_problem(out, START, k) if against == START else seed_mean(out, grpo_label, grpo, k)
            difference = seed_mean(out, algo, done, k) - base
            low, high = mean_interval(difference)
            cells.append(f"{difference.mean():+.3f} [{low:+.3f}, {high:+.3f}]")
            verdicts.append(f"pass@{k} vs {against}: {verdict(low, high)}")
        lines.append(f"| {algo} | {PAPER_DIRECTION.get(algo.removesuffix(FULL), '–')} | " + " | ".join(cells) + " | "
                     + "; ".join(verdicts) + " |")
    return "\n".join(lines)


def write_plot(out: Path, algos: list[str], seeds: list[int], max_new_tokens: int, folder: Path) -> Path:
    """``pass_at_k.png`` (and .md/.json) in ``folder``: the start's curve and each algorithm's seed mean."""
    n = samples(out, START)
    ks = ks_up_to(n)
    curves = {START: {k: float(per_problem(out, START, k).mean()) for k in ks}}
    for algo in algos:
        done = finished_seeds(out, algo, seeds)
        if done:
            curves[f"{algo} ({len(done)} seed{'s' if len(done) > 1 else ''})"] = {
                k: float(seed_mean(out, algo, done, k).mean()) for k in ks}
    problems = len(json.loads(counts_file(out, START).read_text())["correct"])
    settings = {"n": n, "temperature": 1.0, "problems": problems, "max_new_tokens": max_new_tokens}
    return write_pass_at_k_report(curves, folder, title="RL on reasoning-gym arithmetic, SmolLM2-135M-Instruct",
                                  settings=settings)["png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS[:4]), choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--token-budget", type=int, default=8_000)
    parser.add_argument("--n", type=int, default=8, help="samples per held-out problem (pass@k up to k = n)")
    parser.add_argument("--out", default="runs/bench-rl")
    parser.add_argument("--full", action="store_true", help="full fine-tuning with the memory parts, not LoRA")
    parser.add_argument("--table", action="store_true", help="print the tables of what was measured, run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    if args.full:
        args.algos = [algo + FULL for algo in args.algos]
    if not args.table:  # the start last: two processes, one per seed, can share it
        for seed in args.seeds:
            for algo in args.algos:
                train(out, algo, seed, args.token_budget)
                evaluate(out, f"{algo}-s{seed}", str(run_folder(out, algo, seed)), args.n)
        evaluate(out, START, "smollm2", args.n)
    print(f"\npass@k on {SHARED['held_out']} held-out problems, n = {args.n}, T = 1.0, "
          f"{SHARED['max_new_tokens']} new tokens; runs at {args.token_budget:,} generated tokens (mean over seeds "
          f"{args.seeds} [bootstrap 95 % interval over the problems])\n")
    print(table(out, args.algos, args.seeds))
    print("\n" + direction_table(out, args.algos, args.seeds))
    print("\n(Verdicts from a bootstrap over the problems only: a difference from one training seed may be the "
          "seed's.)")
    plot = out / "plot" / ("full" if args.full else "lora")
    print(f"\nplot: {write_plot(out, args.algos, args.seeds, SHARED['max_new_tokens'], plot)}")


if __name__ == "__main__":
    main()
