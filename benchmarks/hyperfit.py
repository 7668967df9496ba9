"""Hyperfitting SmolLM2-135M-Instruct on the CPU preset: full fine-tuning vs last-5-layer LoRA vs
WTA-CRS@0.3 + lean, over seeds of the data sample, side by side.

For each run: the start -> end held-out metrics on BBC News (the training domain, texts never trained
on) and the KJV (a domain it did not train on), the training time (evaluations excluded), and the
CPU peak of one training step of that configuration measured in a fresh subprocess plus its
parameters (docs/design.md, "How figures are measured"). Runs are appended to ``--results`` as they
finish, so an interrupted benchmark keeps what it measured; ``--table`` prints the table again.

Run:  .venv/bin/python benchmarks/hyperfit.py [--seeds 0 1] [--runs full lora-last5 wtacrs-lean kjv-full kjv-blocked]
      .venv/bin/python benchmarks/hyperfit.py --speed 5 --runs full lora-last5 wtacrs-lean   (step times)
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from timing import interleaved_medians, timed_training_step

from leantrain.config import MemoryOptions, OptimConfig
from leantrain.config.hyperfit import HyperfitConfig
from leantrain.memory.peak import cpu_peak_in_subprocess
from leantrain.plan.step_spec import StepSpec
from leantrain.recipes.causal_lm import model_folder
from leantrain.recipes.hyperfit import hyperfit
from leantrain.sampling import SamplingConfig

MIB = 2**20
LORA_LAST5 = MemoryOptions(lora=16, lora_layers=5)
# Run name -> HyperfitConfig fields on top of the CPU preset (LoRA and sampling in the memory section, the lr
# in the optim one). LoRA trains ~1% of the weights: 10x the learning rate ("lora-last5"), or 50x and twice
# the epochs ("lora-last5-long": the follow-up trained far longer).
# "kjv-full" checks the preset's defaults (chosen on BBC News) on a corpus nobody tuned them on; "kjv-blocked" is
# the same run with the paper's citation blocker on its generations (no continuation of a training span past 10).
RUNS = {
    "full": {},
    "lora-last5": {"memory": LORA_LAST5, "optim": OptimConfig(lr=1e-3)},
    "lora-last5-long": {"memory": LORA_LAST5, "optim": OptimConfig(lr=5e-3), "epochs": 24, "eval_every": 12},
    "wtacrs-lean": {"memory": MemoryOptions(sampling=SamplingConfig.from_spec("wtacrs@0.3"), lean=True)},
    "kjv-full": {"corpus": "kjv", "other_corpus": "bbc"},
    "kjv-blocked": {"corpus": "kjv", "other_corpus": "bbc", "citation_block": 10},
}
TITLES = {"bbc": "BBC News", "kjv": "KJV"}
METRICS = (("ttr_greedy", "TTR greedy"), ("ttr_top_p", "TTR top-p"), ("entropy", "entropy"), ("ppl", "ppl"),
           ("copied_greedy", "copies>10"))


def peak_bytes(config: HyperfitConfig) -> int:
    """CPU peak of one training step in a fresh process, plus the parameters."""
    spec = step_spec(config)
    model, _, _ = spec()
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    return cpu_peak_in_subprocess(spec).step_bytes + parameters


def run_config(name: str, seed: int = 0, output_dir: str | None = None) -> HyperfitConfig:
    """Run ``name`` on the CPU preset with ``seed``, in ``output_dir`` (None: the recipe's run folder)."""
    engine = replace(HyperfitConfig().engine, seed=seed, **({} if output_dir is None else {"output_dir": output_dir}))
    return HyperfitConfig(preset="cpu", engine=engine, **RUNS[name])


def step_spec(config: HyperfitConfig) -> StepSpec:
    """One training step of this configuration (its memory parts and optimizer) at its batch shape."""
    config = config.resolved()
    return StepSpec(str(model_folder(config.model)), config.batch_size, config.seq_len, config.optim, config.memory,
                    config.engine.seed)


def speed_table(names: list[str], repeats: int) -> str:
    """Seconds of one training step of each run, interleaved (benchmarks/timing.py), side by side."""
    steps = {}
    for name in names:
        model, batch, optimizer = step_spec(run_config(name))()
        steps[name] = (model, optimizer, batch)
    medians = interleaved_medians(lambda name: timed_training_step(*steps[name]), names, repeats)
    base = medians[names[0]]
    lines = ["| run | step time (median of interleaved repeats) | vs first |", "|---|---|---|"]
    lines += [f"| {name} | {medians[name]:.2f} s | {medians[name] / base:.2f}x |" for name in names]
    return "\n".join(lines)


def run_one(name: str, seed: int, output: Path) -> dict:
    config = run_config(name, seed, str(output / f"{name}-s{seed}"))
    result = hyperfit(config, show_bar=False)
    first, last = result.records[0], result.records[-1]
    return {"run": name, "seed": seed, "train_seconds": result.train_seconds, "peak_bytes": peak_bytes(config),
            "trainable": result.trainable_parameters, "train_loss": last["train_loss"], "start": first, "end": last,
            "control_ttr": (result.control or {}).get("heldout_ttr"),
            "control_temperature": (result.control or {}).get("temperature")}


def table(rows: list[dict]) -> str:
    """Start -> end metrics per domain, then time and memory; one table per training corpus."""
    corpus = RUNS[rows[0]["run"]].get("corpus", "bbc")
    other = RUNS[rows[0]["run"]].get("other_corpus", "kjv")
    names = list(dict.fromkeys(row["run"] for row in rows))
    base = statistics.mean(r["train_seconds"] for r in rows if r["run"] == names[0])
    base_peak = statistics.mean(r["peak_bytes"] for r in rows if r["run"] == names[0])
    lines = [f"Trained on {TITLES[corpus]}:"]
    for domain, title in (("heldout", f"held-out {TITLES[corpus]} (training domain)"),
                          ("other", f"{TITLES[other]} (a domain it did not train on)")):
        lines += ["", f"**{title}**: each run's starting model -> the run's end, mean (± std) over its seeds", "",
                  "| run (seeds) | " + " | ".join(t for _, t in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for name in names:
            mine = [r for r in rows if r["run"] == name]
            cells = []
            for key, _ in METRICS:
                before = statistics.mean(r["start"][f"{domain}_{key}"] for r in mine)
                values = [r["end"][f"{domain}_{key}"] for r in mine]
                spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
                cells.append(f"{before:.3f} -> {statistics.mean(values):.3f}{spread}")
            lines.append(f"| {name} ({', '.join(str(r['seed']) for r in mine)}) | " + " | ".join(cells) + " |")
    lines += ["", "| run | final train loss | trainable params | train time | vs full | step peak (MiB) | vs full |"
              " entropy-matched control TTR |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        mine = [r for r in rows if r["run"] == name]
        seconds = statistics.mean(r["train_seconds"] for r in mine)
        peak = statistics.mean(r["peak_bytes"] for r in mine)
        control = [r["control_ttr"] for r in mine if r["control_ttr"] is not None]
        shown = f"{statistics.mean(control):.3f}" if control else ""
        lines.append(f"| {name} | {statistics.mean(r['train_loss'] for r in mine):.3f} | {mine[0]['trainable']:,} | "
                     f"{seconds:.0f} s | {seconds / base:.2f}x | {peak / MIB:.0f} | {base_peak / peak:.2f}x less | "
                     f"{shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--output", type=Path, default=Path("runs/bench-hyperfit"))
    parser.add_argument("--results", type=Path, default=Path("runs/bench-hyperfit/results.jsonl"))
    parser.add_argument("--table", action="store_true", help="only print the table of --results")
    parser.add_argument("--speed", type=int, default=0, metavar="REPEATS",
                        help="only time one training step of each of --runs, interleaved REPEATS times")
    args = parser.parse_args()
    if args.speed:
        print(speed_table(args.runs, args.speed))
        return
    if not args.table:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for name in args.runs:
                row = run_one(name, seed, args.output)
                with args.results.open("a") as file:
                    file.write(json.dumps(row) + "\n")
                print(f"{name} seed {seed}: greedy TTR {row['start']['heldout_ttr_greedy']:.3f} -> "
                      f"{row['end']['heldout_ttr_greedy']:.3f}, {row['train_seconds']:.0f} s", flush=True)
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    for corpus in TITLES:
        mine = [row for row in rows if RUNS[row["run"]].get("corpus", "bbc") == corpus]
        if mine:
            print(table(mine) + "\n")


if __name__ == "__main__":
    main()
