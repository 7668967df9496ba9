"""Bytes saved for backward, stock vs lean (``lt.apply_lean``), by what holds them; and the
measured peak of one full training step (forward, backward, AdamW) for each; and the time of a
forward + backward, lean relative to stock (interleaved on one model, median of the repeats).

Models are random-weight models built from configs (``leantrain.models.presets``): BERT-base
(fp32, eager attention, dropout 0.1, sequence classification) and a small Llama (4 layers,
hidden 512, GQA 8/4 heads, SwiGLU 1376, vocabulary 32k, causal LM). The CPU peak is the peak RSS
of a fresh subprocess during the step minus its RSS before it (docs/design.md).

Run:  .venv/bin/python benchmarks/memory.py [--models bert-base llama-small] [--bert-batch 32]
          [--llama-batch 32] [--seq-len 128] [--no-peak] [--speed-repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

from transformers.utils import logging

from leantrain.config import MemoryOptions, OptimConfig
from leantrain.lean import apply_lean, remove_lean
from leantrain.memory import saved_tensor_bytes
from leantrain.memory.peak import cpu_peak_in_subprocess
from leantrain.models.presets import build_model, random_batch
from leantrain.plan.step_spec import StepSpec

MIB = 2**20

# what holds the bytes: module type (stock or lean) -> the row it is reported in
HOLDERS = (
    ("inputs of recomputed attention/MLP blocks", ("RecomputedModule",)),
    ("attention", ("SelfAttention", "Attention")),
    ("MLP activation (GELU/SiLU, gated product)", ("Activation", "MLP", "Intermediate")),
    ("norms (LayerNorm/RMSNorm)", ("LayerNorm", "RMSNorm")),
    ("dropout masks", ("Dropout",)),
    ("linear inputs", ("Linear", "Conv1D")),
    ("LM head logits + loss", ("ForCausalLM", "LMHeadModel")),
)


def holder(module_type: str) -> str:
    for row, suffixes in HOLDERS:
        if module_type.endswith(suffixes):
            return row
    return "other (embeddings, pooler, classifier)"


def by_holder(by_type: dict[str, int]) -> dict[str, int]:
    rows: dict[str, int] = defaultdict(int)
    for module_type, size in by_type.items():
        rows[holder(module_type)] += size
    return rows


def step_seconds(model, batch) -> float:
    start = time.perf_counter()
    model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def lean_time_ratio(model, batch, repeats: int) -> float:
    """Median over ``repeats`` of (lean step time / stock step time), the two run back to back."""
    ratios = []
    step_seconds(model, batch)  # warm-up
    for _ in range(repeats):
        stock = step_seconds(model, batch)
        apply_lean(model)
        lean = step_seconds(model, batch)
        remove_lean(model)
        ratios.append(lean / stock)
    return statistics.median(ratios)


def compare(name: str, batch_size: int, seq_len: int, peak: bool, speed_repeats: int) -> None:
    model = build_model(name)
    batch = random_batch(model, batch_size, seq_len)
    stock = saved_tensor_bytes(model, batch)
    time_ratio = lean_time_ratio(model, batch, speed_repeats) if speed_repeats else None
    changed = apply_lean(model)
    lean = saved_tensor_bytes(model, batch)
    print(f"\n## {name}: {type(model).__name__}, batch {batch_size} x {seq_len} tokens, fp32, training mode")
    print(f"lean companions swapped in: {len(changed)} ({', '.join(sorted(set(changed.values())))})\n")
    stock_rows, lean_rows = by_holder(stock.by_type), by_holder(lean.by_type)
    print(f"{'saved for backward, held by':<44}{'stock MiB':>10}{'share':>7}{'lean MiB':>10}{'lean/stock':>11}")
    for row in sorted(set(stock_rows) | set(lean_rows), key=lambda r: -stock_rows.get(r, 0)):
        s, le = stock_rows.get(row, 0), lean_rows.get(row, 0)
        ratio = f"{le / s:.3f}" if s else "-"
        print(f"{row:<44}{s / MIB:>10.1f}{100 * s / stock.total:>6.1f}%{le / MIB:>10.1f}{ratio:>11}")
    print(f"{'total':<44}{stock.total / MIB:>10.1f}{100.0:>6.1f}%{lean.total / MIB:>10.1f}"
          f"{lean.total / stock.total:>11.3f}")
    print("(a lean norm keeps its output, which the next Linear keeps too: those shared bytes move from "
          "'linear inputs' to 'norms')")
    if time_ratio is not None:
        print(f"\nforward + backward time, lean / stock: {time_ratio:.2f}x (median of {speed_repeats}, interleaved)")
    if peak:
        del model, batch
        adamw = OptimConfig("adamw")
        stock_peak = cpu_peak_in_subprocess(StepSpec(name, batch_size, seq_len, adamw))
        lean_peak = cpu_peak_in_subprocess(StepSpec(name, batch_size, seq_len, adamw, MemoryOptions(lean=True)))
        print(f"\npeak of one AdamW step above resident ({stock_peak.method}): stock "
              f"{stock_peak.step_bytes / MIB:.0f} MiB, lean {lean_peak.step_bytes / MIB:.0f} MiB "
              f"({lean_peak.step_bytes / stock_peak.step_bytes:.3f}x); resident before the step: stock "
              f"{stock_peak.resident_bytes / MIB:.0f} MiB, lean {lean_peak.resident_bytes / MIB:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert-batch", type=int, default=32)
    parser.add_argument("--llama-batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--peak", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--speed-repeats", type=int, default=3, help="0 skips the step-time comparison")
    models = ["bert-base", "llama-small"]
    parser.add_argument("--models", nargs="+", choices=models, default=models)
    args = parser.parse_args()
    logging.set_verbosity_error()
    for name in args.models:
        batch_size = args.bert_batch if name == "bert-base" else args.llama_batch
        compare(name, batch_size, args.seq_len, args.peak, args.speed_repeats)


if __name__ == "__main__":
    main()
