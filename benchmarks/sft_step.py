"""One fine-tuning step at the memory frontier: leantrain's memory parts against what a user picks instead,
side by side in one run (issue "Causal-LM fine-tuning at the memory frontier").

Models and batches: SmolLM2-135M-Instruct (offline, full fine-tuning, causal-LM loss on every token) at
``--batch`` × ``--seq`` (default 4 × 512), and BERT-base (random weights, sequence classification) at
64 × 128; with ``--models smollm2-1.7b llama-7b``, the shapes of SmolLM2-1.7B at 4 × 512 and Llama-2-7B at
1 × 512 (random weights, built straight in their weights' dtype). Random token ids from a fixed seed, the
same for every configuration; eager attention.

Configurations (``CONFIGS``):

- ``stock``: the HF model and ``torch.optim.AdamW``;
- ``HF checkpointing + 8-bit AdamW``: ``model.gradient_checkpointing_enable()`` (non-reentrant) and
  bitsandbytes' ``AdamW8bit`` (HF's ``optim="adamw_bnb_8bit"``), the one-line alternative, on fp32 weights;
- ``bf16 + HF checkpointing + torchao AdamW8bit``: the same with the model in bf16 and torchao's
  ``AdamW8bit(bf16_stochastic_round=True)``, what a user picks on one GPU today. On a CPU without bf16
  units its products run in fp32 from the bf16 tensors, as leantrain's do (fp32_matmuls.py), so that the
  times compare the rest of the step (with native bf16 products a SmolLM2-1.7B step took 20 minutes here);
- ``TRL SFTTrainer``: TRL 1.16's trainer with its memory options on CPU, ``gradient_checkpointing=True``
  and ``optim="adamw_bnb_8bit"`` (its fused GRPO head and Liger kernels are GPU-only or RL-only), fp32
  (``bf16=False``: its default bf16 autocast made a step 8× slower on this CPU), on a pre-tokenised
  dataset of the same rows; causal LMs only;
- leantrain's: layer checkpointing + chunked loss + 8-bit states + step in backward (every part exact),
  then with the lean companions, then GaLore (rank 128) with 8-bit states instead of AdamW; with bf16
  trained weights (stochastic rounding), 8-bit AdamW, and Adafactor without a first moment (the state
  floor), each with checkpointing + chunked loss + step in backward; and the planner's choice for
  ``PLANNER_BUDGET`` (planned in the parent process, from copies of one and two layers).

Before a configuration runs, the planner estimates its total (the HF and TRL ones through the leantrain
parts they match: HF checkpointing as layer checkpointing, an 8-bit AdamW as 8-bit states). One estimated
above 90% of the available memory is not started: its estimate is reported instead.

Each configuration runs in two fresh subprocesses, one after the other. Memory: glibc's mmap threshold
fixed (memory/peak.py: RSS then follows the live bytes), every configuration's libraries imported
(bitsandbytes, TRL, leantrain), a warm-up step of a tiny layer, then the RSS before the model is built;
the model, optimizer and batch are built (weights copied out of their file mapping) and 2 steps run
(forward, backward, optimizer step, ``zero_grad``; the second starts with the optimizer states). Total
peak = the process's peak RSS over them minus its RSS before the model: weights, gradients, optimizer
states and activations. Time: the same with glibc's default allocator (the fixed threshold maps and
faults in every large temporary afresh, which made allocation-heavy steps up to 3x slower than in a
training process), ``--steps`` steps, the median of those after the first. At the big shapes on a CPU one
process gives both (a step takes minutes): the time is its second step's, under the fixed threshold (every
temporary there is far above glibc's largest default threshold, 32 MiB, and is mapped afresh anyway).

Run:  .venv/bin/python benchmarks/sft_step.py [--models smollm2 bert-base] [--steps 3] [--only NAME ...]
      [--models llama-tiny --shape 2 16]   (a quick check of the script)
      [--device cuda]   (on a GPU: allocated bytes instead of RSS; benchmarks/device.sh)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from leantrain.config import MemoryOptions, OptimConfig, describe_parts
from leantrain.memory.allocator import fix_mmap_threshold
from leantrain.memory.peak import proc_status_kib

MIB = 2**20
LR = 1e-5
# leantrain's parts: its memory section and its optimizer section (lr None: the measured step's, StepSpec's).
EXACT = (MemoryOptions(checkpointing="layers", chunked_loss=True), OptimConfig(state_bits=8, step_in_backward=True))
SIXTEEN = (EXACT[0], replace(EXACT[1], weights="bf16"))
FLOOR = (EXACT[0], OptimConfig("adafactor", weights="bf16", step_in_backward=True))
SHAPES = {"smollm2": (4, 512), "bert-base": (64, 128), "smollm2-1.7b": (4, 512), "llama-7b": (1, 512)}
# The planner's budget: about 1.5x below what HF checkpointing + 8-bit AdamW measured (BENCHMARKS.md); at 1.7B
# 2.5 bytes a weight, at 7B 14 GiB (issue "Full fine-tuning of billion-parameter models").
PLANNER_BUDGET = {"smollm2": 1.5 * 2**30, "bert-base": 1.0 * 2**30, "smollm2-1.7b": 4.0 * 2**30,
                  "llama-7b": 14 * 2**30}


@dataclass(frozen=True)
class Setup:
    kind: str  # "leantrain", "hf" or "trl"
    parts: tuple[MemoryOptions, OptimConfig] | None = None  # leantrain's parts, or the ones an HF setup matches
    planner: bool = False  # leantrain's parts: chosen for the budget
    weights: str = "fp32"  # hf: the model's dtype
    optimizer: str = "torch"  # hf: torch's AdamW, bitsandbytes' or torchao's 8-bit AdamW


CONFIGS = {
    "stock": Setup("hf", (MemoryOptions(), OptimConfig())),
    "HF checkpointing + 8-bit AdamW": Setup("hf", (MemoryOptions(checkpointing="layers"), OptimConfig(state_bits=8)),
                                            optimizer="bnb"),
    "bf16 + HF checkpointing + torchao AdamW8bit (bf16 stochastic rounding)":
        Setup("hf", (MemoryOptions(checkpointing="layers"), OptimConfig(state_bits=8, weights="bf16")),
              weights="bf16", optimizer="torchao"),
    "TRL SFTTrainer (checkpointing + 8-bit AdamW)": Setup("trl", (MemoryOptions(checkpointing="layers"),
                                                                   OptimConfig(state_bits=8))),
    "leantrain: checkpointing + chunked loss + 8-bit + step in backward": Setup("leantrain", EXACT),
    "leantrain: the above + lean": Setup("leantrain", (replace(EXACT[0], lean=True, chunked_loss=False), EXACT[1])),
    "leantrain: GaLore r128 8-bit + checkpointing + chunked loss + step in backward":
        Setup("leantrain", (EXACT[0], replace(EXACT[1], name="galore", rank=128))),
    "leantrain: bf16 weights + 8-bit AdamW + checkpointing + chunked loss + step in backward":
        Setup("leantrain", SIXTEEN),
    "leantrain: bf16 weights + Adafactor + checkpointing + chunked loss + step in backward": Setup("leantrain", FLOOR),
    "leantrain: the planner's choice": Setup("leantrain", planner=True),
}
BIG = ("smollm2-1.7b", "llama-7b")  # no TRL or fp32 AdamW (stock) runs at these sizes: see the estimates


def _hf_step(setup: Setup, model_name: str, batch: int, seq: int):
    from leantrain.fp32_matmuls import prefer_fp32_matmuls_
    from leantrain.models.presets import build_model, random_batch

    model = build_model(model_name, dtype={"fp32": "float32", "bf16": "bfloat16"}[setup.weights])
    prefer_fp32_matmuls_(model)  # bf16 products in fp32 where this CPU has no bf16 units, as leantrain's
    trained = [p for p in model.parameters() if p.requires_grad]
    if setup.parts[0].checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if setup.optimizer == "bnb":
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(trained, lr=LR)
    elif setup.optimizer == "torchao":
        from torchao.optim import AdamW8bit

        optimizer = AdamW8bit(trained, lr=LR, bf16_stochastic_round=True)
    else:
        optimizer = torch.optim.AdamW(trained, lr=LR)
    return model, random_batch(model, batch, seq), optimizer


def _leantrain_step(parts: tuple[MemoryOptions, OptimConfig], model_name: str, batch: int, seq: int):
    from leantrain.plan.step_spec import StepSpec

    memory, optim = parts
    model, inputs, optimizer = StepSpec(model_name, batch, seq, optim, memory)()
    return model, inputs, optimizer, describe_parts(memory, optim)


def _train_steps(model: nn.Module, inputs: dict, optimizer, steps: int, device: str) -> list[float]:
    model.to(device)
    inputs = {key: value.to(device) for key, value in inputs.items()}
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds


def _trl_steps(model_name: str, batch: int, seq: int, steps: int, device: str) -> list[float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from leantrain.models.presets import build_model

    model = build_model(model_name)
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(model.config.vocab_size, (batch, seq), generator=generator)
    data = Dataset.from_dict({"input_ids": rows.repeat(steps, 1).tolist()})
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            times[-1] = time.perf_counter() - times[-1]

    config = SFTConfig(output_dir="/tmp/leantrain-trl-bench", per_device_train_batch_size=batch, max_steps=steps,
                       learning_rate=LR, gradient_checkpointing=True, optim="adamw_bnb_8bit", max_length=seq,
                       bf16=False,  # TRL's SFTConfig defaults to bf16 autocast; every configuration here is fp32
                       packing=False, report_to=[], save_strategy="no", logging_strategy="no",
                       use_cpu=device == "cpu", dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, callbacks=[Clock()])
    trainer.train()
    return times


def _child(name: str, setup: Setup, model_name: str, batch: int, seq: int, steps: int, device: str, memory: bool,
           results) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        if memory:
            fix_mmap_threshold()  # as memory/peak.py: RSS follows the live bytes
        import bitsandbytes  # noqa: F401  every configuration's libraries are loaded before the baseline,
        import torchao.optim  # noqa: F401  so that none is charged for code it imports
        import trl  # noqa: F401

        from leantrain.plan import planner  # noqa: F401
        layer = nn.Linear(64, 64)
        layer(torch.randn(8, 64)).sum().backward()
        torch.optim.AdamW(layer.parameters()).step()
        gc.collect()
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts here
        empty = proc_status_kib("VmRSS")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        described = name
        if setup.kind == "trl":
            seconds = _trl_steps(model_name, batch, seq, steps, device)
        else:
            if setup.kind == "hf":
                model, inputs, optimizer = _hf_step(setup, model_name, batch, seq)
            else:
                model, inputs, optimizer, described = _leantrain_step(setup.parts, model_name, batch, seq)
            seconds = _train_steps(model, inputs, optimizer, steps, device)
        peak = (torch.cuda.max_memory_allocated() if device == "cuda"
                else (proc_status_kib("VmHWM") - empty) * 1024)
        weights = sum(p.numel() * p.element_size() for p in
                      {id(p): p for p in (model.parameters() if setup.kind != "trl" else [])}.values())
        results.put({"name": name, "parts": described, "total_bytes": peak, "seconds": seconds,
                     "weight_bytes": weights})
    except BaseException as error:  # report, do not hang the parent
        results.put({"name": name, "error": f"{type(error).__name__}: {error}"})


def measure(name: str, model_name: str, batch: int, seq: int, steps: int, device: str) -> dict:
    from leantrain.memory.available import FRACTION, available_bytes
    from leantrain.plan.planner import estimate_step, plan_memory

    setup = CONFIGS[name]
    if setup.planner:
        budget = int(PLANNER_BUDGET.get(model_name, 2**30))
        try:
            plan = plan_memory(model_name, batch, seq, budget, optim=replace(OptimConfig(), name="adafactor")
                               if model_name in BIG else None)
        except (ValueError, MemoryError) as error:  # nothing fits the budget: a result to report, not a crash
            return {"name": name, "error": str(error)}
        print(plan.explain(), flush=True)
        setup = Setup("leantrain", (plan.memory, plan.optim))
    try:
        estimate = estimate_step(model_name, batch, seq, *setup.parts).total
    except ValueError as error:  # parts this model refuses (e.g. a rank above its width): reported
        return {"name": name, "error": str(error)}
    if device == "cpu" and estimate > FRACTION * available_bytes():
        return {"name": name, "estimate_bytes": estimate,
                "error": f"estimated {estimate / MIB:,.0f} MiB, above {FRACTION:.0%} of the available memory: "
                         "not run"}
    if device == "cpu" and model_name in BIG and setup.parts[1].weights == "fp32":
        return {"name": name, "estimate_bytes": estimate,
                "error": "fp32 weights at this size: the estimate stands in (a run would leave this 24 GiB machine "
                         "under 2 GiB free, or take an hour of fp32 steps)"}
    outcome = {"estimate_bytes": estimate}
    one_process = device == "cpu" and model_name in BIG  # steps of minutes: the memory's process times them too
    for memory in (True,) if one_process else (True, False):  # the memory's, the time's (2 / ``steps`` steps)
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        process = context.Process(target=_child, args=(name, setup, model_name, batch, seq, 2 if memory else steps,
                                                        device, memory, results))
        process.start()
        result = results.get()
        process.join()
        if "error" in result:
            return result
        outcome.update(result if memory else {"seconds": result["seconds"]})
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES),
                        help="smollm2 and bert-base (their shapes above), or any name build_model knows with --shape")
    parser.add_argument("--shape", nargs=2, type=int, default=None, metavar=("BATCH", "SEQ"),
                        help="batch shape for every model (default: each model's in SHAPES)")
    parser.add_argument("--steps", type=int, default=3, help="steps per configuration (time: median after the first)")
    parser.add_argument("--only", nargs="+", default=None, help="configurations whose name starts with one of these")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    everything = {}
    for model_name in args.models:
        batch, seq = args.shape or SHAPES[model_name]
        names = [name for name in CONFIGS if args.only is None or name.startswith(tuple(args.only))]
        if model_name == "bert-base":
            names = [name for name in names if CONFIGS[name].kind != "trl"]  # TRL's SFT is for causal LMs
        if model_name in BIG:  # TRL is the HF pick's trainer; stock fp32 AdamW needs 16 bytes a weight
            names = [name for name in names if CONFIGS[name].kind != "trl" and name != "stock"]
        rows = []
        for name in names:
            result = measure(name, model_name, batch, seq, args.steps, args.device)
            rows.append(result)
            if "error" in result:
                print(f"  {name}: {result['error']}", flush=True)
            else:
                print(f"  {name}: {result['total_bytes'] / MIB:,.0f} MiB, "
                      f"{statistics.median(result['seconds'][1:] or result['seconds']):.1f} s/step", flush=True)
        everything[model_name] = rows
        table(model_name, batch, seq, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2))


def table(model_name: str, batch: int, seq: int, rows: list[dict]) -> None:
    from leantrain.models.presets import meta_model

    done = [row for row in rows if "error" not in row]
    if not done:
        return
    parameters = sum(p.numel() for p in meta_model(model_name).parameters())
    picks = [row for row in done if CONFIGS[row["name"]].optimizer in ("bnb", "torchao")]
    alternative = min(picks, key=lambda row: row["total_bytes"]) if picks else done[0]  # the better user pick

    def seconds(row: dict) -> float:
        return statistics.median(row["seconds"][1:] or row["seconds"])

    print(f"\n{model_name}, batch {batch} x {seq}, {parameters / 1e9:.2f}B parameters (fp32 weights "
          f"{4 * parameters / MIB:,.0f} MiB); against: {alternative['name']}")
    print("| configuration | parts | estimate | total peak | bytes a parameter | vs the user's pick | step time "
          "| time vs the user's pick |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        estimate = f"{row['estimate_bytes'] / MIB:,.0f} MiB" if "estimate_bytes" in row else "-"
        if "error" in row:
            print(f"| {row['name']} | - | {estimate} | {row['error']} | | | | |")
            continue
        print(f"| {row['name']} | {row['parts']} | {estimate} | {row['total_bytes'] / MIB:,.0f} MiB | "
              f"{row['total_bytes'] / parameters:.2f} | {alternative['total_bytes'] / row['total_bytes']:.2f}x less | "
              f"{seconds(row):.1f} s | {seconds(row) / seconds(alternative):.2f}x |")


if __name__ == "__main__":
    main()
