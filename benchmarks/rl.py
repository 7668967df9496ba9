"""GRPO vs DARS-ET vs DARS-HW vs SELF (and DARS-B) from the same start at the same budget of generated
tokens, then pass@k (k = 1 … n) of every run on the same held-out problems, over seeds.

Every run trains SmolLM2-135M-Instruct on the built-in `arithmetic` problems (reasoning-gym chain_sum)
with the settings of ``shared_config`` (LoRA r = 16 on every linear layer, so that a CPU affords the runs; the
algorithms' own defaults otherwise) until ``--token-budget`` tokens were generated. Then each run's
policy, and the starting model once, samples ``--n`` completions of each of the ``held_out`` problems
(the same seeded samples for every policy) and the unbiased pass@k is computed. Runs and counts are
kept under ``--out`` as they finish: an interrupted benchmark resumes where it stopped, and
``--table`` prints the tables again.

Run:  .venv/bin/python benchmarks/rl.py --seeds 0 1 [--algos grpo dars-et dars-hw self] [--token-budget 8000]
      (on 2 cores: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py --seeds 0 & ... --seeds 1, one process a core)
      .venv/bin/python benchmarks/rl.py --seeds 0 1 --table
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from leantrain.config import MemoryOptions
from leantrain.config.rl import RLConfig
from leantrain.recipes.rl import load_policy, prepare_problems, rl
from leantrain.recipes.rl_eval import count_correct, ks_up_to
from leantrain.rl.pass_at_k import pass_at_k

ALGOS = ("grpo", "dars-et", "dars-hw", "self", "dars-b")
SHARED = {"max_new_tokens": 16, "generation_batch": 128, "eval_problems": 0, "eval_every": None, "steps": 1000,
          "held_out": 200}
START = "start"


def shared_config(folder: Path | None = None, seed: int = 0, **fields) -> RLConfig:
    """``SHARED`` with ``fields``, LoRA r16, lr 2e-4 and 8 micro-batches an update; the run folder ``folder``
    (None: the recipe's) and seed ``seed``."""
    defaults = RLConfig()
    engine = replace(defaults.engine, grad_accum=8, seed=seed)
    if folder is not None:
        engine = replace(engine, output_dir=str(folder))
    return RLConfig(**SHARED, **fields, engine=engine, optim=replace(defaults.optim, lr=2e-4),
                    memory=MemoryOptions(lora=16))


def run_folder(out: Path, algo: str, seed: int) -> Path:
    return out / f"{algo}-s{seed}"


def train(out: Path, algo: str, seed: int, budget: int) -> None:
    folder = run_folder(out, algo, seed)
    if (folder / "summary.json").is_file():
        return
    config = shared_config(folder, seed, algo=algo, token_budget=budget)
    resume = (folder / "checkpoint.safetensors").is_file()
    print(f"{algo} seed {seed}: training to {budget:,} generated tokens{' (resuming)' if resume else ''}", flush=True)
    result = rl(config, resume=resume, show_bar=True)
    print(f"{algo} seed {seed}: {result.steps} steps, {result.generated_tokens:,} tokens, {result.train_seconds:.0f}s",
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


def curve(out: Path, label: str) -> dict[int, float]:
    record = json.loads(counts_file(out, label).read_text())
    return {k: pass_at_k(record["n"], record["correct"], k) for k in ks_up_to(record["n"])}


def run_facts(out: Path, algo: str, seed: int) -> dict[str, float]:
    summary = json.loads((run_folder(out, algo, seed) / "summary.json").read_text())
    records = [json.loads(line) for line in (run_folder(out, algo, seed) / "metrics.jsonl").read_text().splitlines()]
    firsts = [r for r in records if "reward_mean" in r]
    facts = {"steps": summary["steps"], "tokens": summary["generated_tokens"], "seconds": summary["train_seconds"],
             "reward": statistics.fmean(r["reward_mean"] for r in firsts),
             "generation": sum(r["generation_seconds"] for r in firsts)}
    saved = [r["second_saved"] for r in firsts if r.get("second_saved") == r.get("second_saved")
             and "second_saved" in r]
    if saved:
        facts["second_saved"] = statistics.fmean(saved)
    return facts


def table(out: Path, algos: list[str], seeds: list[int]) -> str:
    start = curve(out, START)
    ks = list(start)
    header = "| policy | " + " | ".join(f"pass@{k}" for k in ks) + " | steps | tokens | train s | mean reward |"
    lines = [header, "|" + "---|" * (len(ks) + 5), "| start | " + " | ".join(f"{start[k]:.3f}" for k in ks)
             + " | – | – | – | – |"]
    for algo in algos:
        done = [s for s in seeds if counts_file(out, f"{algo}-s{s}").is_file()]
        if not done:
            continue
        curves = [curve(out, f"{algo}-s{s}") for s in done]
        facts = [run_facts(out, algo, s) for s in done]
        cells = []
        for k in ks:
            values = [c[k] for c in curves]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.fmean(values):.3f}{spread}")
        mean = {key: statistics.fmean(f[key] for f in facts) for key in facts[0]}
        name = f"{algo} ({len(done)} seed{'s' if len(done) > 1 else ''})"
        extra = f", 2nd_saved {mean['second_saved']:.2f}" if "second_saved" in mean else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean['steps']:.1f} | {mean['tokens']:,.0f} | "
                     f"{mean['seconds']:.0f} | {mean['reward']:.3f}{extra} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS[:4]), choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--token-budget", type=int, default=8_000)
    parser.add_argument("--n", type=int, default=8, help="samples per held-out problem (pass@k up to k = n)")
    parser.add_argument("--out", default="runs/bench-rl")
    parser.add_argument("--table", action="store_true", help="print the tables of what was measured, run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.table:  # the start last: two processes, one per seed, can share it
        for seed in args.seeds:
            for algo in args.algos:
                train(out, algo, seed, args.token_budget)
                evaluate(out, f"{algo}-s{seed}", str(run_folder(out, algo, seed)), args.n)
        evaluate(out, START, "smollm2", args.n)
    print(f"\npass@k on {SHARED['held_out']} held-out problems, n = {args.n}, T = 1.0, "
          f"{SHARED['max_new_tokens']} new tokens; runs at {args.token_budget:,} generated tokens "
          f"(mean ± std over seeds {args.seeds})\n")
    print(table(out, args.algos, args.seeds))


if __name__ == "__main__":
    main()
