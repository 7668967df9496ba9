"""The RL comparison's tables (benchmarks/rl.py) from counts written as the benchmark writes them: pass@k with
bootstrap intervals that hold the mean, seeds averaged per problem, and the paired differences to GRPO called
higher, lower or unresolved by their intervals; the plot is written."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

import rl as bench  # benchmarks/rl.py

PROBLEMS, N = 150, 8


def write_run(out: Path, label: str, chance: float, seed: int, algo: str | None = None) -> None:
    correct = np.random.default_rng(seed).binomial(N, chance, PROBLEMS)
    path = bench.counts_file(out, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"n": N, "correct": correct.tolist(), "scored": [N] * PROBLEMS,
                                "generated_tokens": 0, "seconds": 0.0}))
    if algo is not None:
        folder = bench.run_folder(out, algo, int(label.rsplit("-s", 1)[1]))
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"steps": 100, "generated_tokens": 90_000,
                                                         "train_seconds": 1500.0}))
        step = {"reward_mean": 0.1, "generation_seconds": 3.0, "rollouts": 64, "gradient_rows": 24, "signal_rows": 20}
        (folder / "metrics.jsonl").write_text(json.dumps(step) + "\n")


def test_the_tables_give_intervals_and_resolve_clear_differences(tmp_path):
    write_run(tmp_path, bench.START, 0.10, 0)
    for seed in (0, 1):
        write_run(tmp_path, f"grpo-s{seed}", 0.15, 10 + seed, "grpo")
        write_run(tmp_path, f"dars-et-s{seed}", 0.35, 20 + seed, "dars-et")
    write_run(tmp_path, "self-s0", 0.15, 11, "self")  # GRPO's seed-1 counts: no difference there
    table = bench.table(tmp_path, ["grpo", "dars-et", "self"], [0, 1])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == ["start", "grpo (2 seeds)", "dars-et (2 seeds)", "self (1 seed)"]
    means = bench.seed_mean(tmp_path, "grpo", [0, 1], 1)
    np.testing.assert_allclose(means, (bench.per_problem(tmp_path, "grpo-s0", 1)
                                       + bench.per_problem(tmp_path, "grpo-s1", 1)) / 2)
    for line in rows.values():
        for cell in line.split(" | ")[1:5]:  # pass@1 … pass@8: "mean [low, high]", low <= mean <= high
            mean, low, high = (float(x) for x in cell.replace("[", "").replace("]", "").replace(",", "").split())
            assert low <= mean <= high and high - low < 0.3
    assert "| 100.0 | 90,000 | 1500 | 64 | 20 |" in rows["grpo (2 seeds)"]

    direction = bench.direction_table(tmp_path, ["grpo", "dars-et", "self"], [0, 1]).splitlines()
    assert direction[0].startswith("| policy | the papers' direction | Δ pass@1 vs GRPO | Δ pass@8 vs GRPO")
    dars, self_row = direction[2], direction[3]
    assert "pass@1 vs grpo: higher; pass@8 vs grpo: higher; pass@8 vs start: higher" in dars
    assert "pass@1 vs grpo: no difference resolved" in self_row
    assert bench.PAPER_DIRECTION["dars-et"] in dars

    write_run(tmp_path, "grpo-full-s0", 0.35, 30, "grpo-full")  # full fine-tuning compares with its own GRPO
    write_run(tmp_path, "dars-et-full-s0", 0.15, 31, "dars-et-full")
    full = bench.direction_table(tmp_path, ["grpo-full", "dars-et-full"], [0]).splitlines()
    assert len(full) == 3 and "pass@1 vs grpo: lower" in full[2] and bench.PAPER_DIRECTION["dars-et"] in full[2]
    config = bench.shared_config(tmp_path, 0, full=True, algo="grpo")
    assert config.memory.lora is None and config.optim.state_bits == 8 and bench.shared_config().memory.lora == 16

    plot = bench.write_plot(tmp_path, ["grpo", "dars-et", "self"], [0, 1], 16, tmp_path / "plot")
    assert plot.stat().st_size > 0 and (tmp_path / "plot" / "pass_at_k.md").is_file()
