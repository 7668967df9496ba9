"""Held-out answer loss after a short SFT run: leantrain's memory parts against TRL's SFTTrainer with its
memory options, on the same rows (issue "Causal-LM fine-tuning at the memory frontier").

SmolLM2-135M-Instruct, full fine-tuning on the built-in "arithmetic" SFT data (data/sft.py: reasoning-gym
chain_sum with worked answers; 256 problems per configuration, 100 held out), ``--steps`` updates of
``--batch`` rows, lr 2e-5 cosine with 5% warm-up, fp32. Each leantrain configuration is ``leantrain sft``
(the recipe, clipping at 1.0 except with the step in backward, which cannot clip); TRL's is
``SFTTrainer`` (1.16) with ``gradient_checkpointing=True``, ``optim="adamw_bnb_8bit"``, the same lr,
schedule, clipping and rows as conversational prompt-completion examples (its completion-only loss),
``bf16=False``; it draws its own batch order. The held-out loss is the mean answer-token NLL of the 100
held-out examples (TRL: ``trainer.evaluate()``'s ``eval_loss`` on the same examples, which it computes the
same way, but in batches whose per-batch means it averages).

Run:  .venv/bin/python benchmarks/sft_loss.py [--steps 20] [--batch 8] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from leantrain.config import MemoryOptions, OptimConfig
from leantrain.config.sft import SFTConfig
from leantrain.data.sft import load_sft_data
from leantrain.recipes.sft import sft
from leantrain.sampling import SamplingConfig

# Each configuration: its memory section and its optimizer section.
EXACT = (MemoryOptions(checkpointing="layers", chunked_loss=True), OptimConfig(state_bits=8, step_in_backward=True))
CONFIGS: dict[str, tuple[MemoryOptions, OptimConfig]] = {
    "stock (AdamW)": (MemoryOptions(), OptimConfig()),
    "leantrain: checkpointing + chunked loss + 8-bit + step in backward": EXACT,
    "leantrain: the above + lean + WTA-CRS@0.3": (
        replace(EXACT[0], lean=True, chunked_loss=False, sampling=SamplingConfig("wtacrs", 0.3, seed=0)), EXACT[1]),
    "leantrain: GaLore r128 8-bit + checkpointing + chunked loss + step in backward":
        (EXACT[0], replace(EXACT[1], name="galore", rank=128)),
}
TRL = "TRL SFTTrainer (checkpointing + 8-bit AdamW)"


def run_leantrain(parts: tuple[MemoryOptions, OptimConfig], steps: int, batch: int, folder: str) -> dict:
    memory, optim = parts
    config = SFTConfig(batch_size=batch, max_steps=steps, eval_problems=0,
                       engine=replace(SFTConfig().engine, output_dir=folder), optim=optim, memory=memory)
    started = time.perf_counter()
    result = sft(config, show_bar=False)
    return {"start": result.records[0]["heldout_loss"], "end": result.records[-1]["heldout_loss"],
            "seconds": time.perf_counter() - started}


def run_trl(steps: int, batch: int, folder: str) -> dict:
    from datasets import Dataset
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from leantrain.models.presets import build_model
    from leantrain.models.smollm2 import smollm2_path

    data = load_sft_data("arithmetic", 100, 256, 0)
    model = build_model("smollm2")
    model.config._name_or_path = str(smollm2_path())  # TRL loads the tokenizer from it
    config = TRLConfig(output_dir=folder, per_device_train_batch_size=batch, per_device_eval_batch_size=32,
                       max_steps=steps, learning_rate=2e-5, lr_scheduler_type="cosine", warmup_ratio=0.05,
                       max_grad_norm=1.0, gradient_checkpointing=True, optim="adamw_bnb_8bit", bf16=False,
                       max_length=512, packing=False, report_to=[], save_strategy="no", logging_strategy="no",
                       use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(data.train),
                         eval_dataset=Dataset.from_list(data.held_out))
    start = trainer.evaluate()["eval_loss"]
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"start": start, "end": trainer.evaluate()["eval_loss"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--only", nargs="+", default=None, help="configurations whose name starts with one of these")
    args = parser.parse_args()
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    rows = []
    for name in [*CONFIGS, TRL]:
        if args.only is not None and not name.startswith(tuple(args.only)):
            continue
        with tempfile.TemporaryDirectory(prefix="leantrain-sft-loss-") as folder:
            result = (run_trl(args.steps, args.batch, folder) if name == TRL
                      else run_leantrain(CONFIGS[name], args.steps, args.batch, folder))
        rows.append((name, result))
        print(f"  {name}: held-out loss {result['start']:.4f} -> {result['end']:.4f}, {result['seconds']:.0f} s",
              flush=True)
    print(f"\n| configuration | held-out loss at start | after {args.steps} updates | train time |")
    print("|---|---|---|---|")
    for name, result in rows:
        print(f"| {name} | {result['start']:.4f} | {result['end']:.4f} | {result['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
