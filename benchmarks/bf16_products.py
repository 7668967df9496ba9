"""How fast this machine multiplies bf16 matrices: a linear layer's three products and attention, in fp32, in
native bf16, and in bf16 tensors with fp32 products (leantrain's ``fp32_matmuls``), side by side in one run.

A SmolLM2-1.7B layer's shapes at 1 × 512 tokens: F.linear's output ``X Wᵀ`` (512 × 2048 · 8192 × 2048), its
input gradient ``dY W`` and weight gradient ``dYᵀ X``; attention (1 × 32 heads × 512 × 64) forward and
backward through HF's eager attention and through SDPA. Each figure is the median of ``--repeats`` timings,
in GFLOP/s (attention: seconds of forward + backward). Where ``bf16_matmul_is_native("cpu")`` is False,
PyTorch's bf16 CPU products fall back to reference loops; the fp32-product column is what leantrain runs there.

Run:  .venv/bin/python benchmarks/bf16_products.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from leantrain.fp32_matmuls import bf16_matmul_is_native, linear, matmul

TOKENS, WIDTH, FFN = 512, 2048, 8192
BATCH, HEADS, LENGTH, HEAD_DIM = 1, 32, 512, 64


def seconds(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def linear_products(dtype: torch.dtype, fp32_products: bool) -> dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(0)
    x, dy = torch.randn(TOKENS, WIDTH, generator=generator), torch.randn(TOKENS, FFN, generator=generator)
    weight = torch.randn(FFN, WIDTH, generator=generator)
    x, dy, weight = x.to(dtype), dy.to(dtype), weight.to(dtype)
    product = matmul if fp32_products else torch.matmul
    forward = linear if fp32_products else nn.functional.linear
    return {"X Wᵀ (output)": lambda: forward(x, weight), "dY W (input gradient)": lambda: product(dy, weight),
            "dYᵀ X (weight gradient)": lambda: product(dy.T, x)}


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, product) -> torch.Tensor:
    scores = product(q, k.transpose(2, 3)) * HEAD_DIM**-0.5
    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).triu(1)
    probs = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1, dtype=torch.float32).to(q.dtype)
    return product(probs, v)


def attention_step(dtype: torch.dtype, kind: str, fp32_products: bool) -> Callable[[], object]:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(BATCH, HEADS, LENGTH, HEAD_DIM, generator=generator).to(dtype).requires_grad_()
               for _ in range(3))

    def step() -> None:
        if kind == "sdpa":
            inputs = [t.float() for t in (q, k, v)] if fp32_products else [q, k, v]
            out = nn.functional.scaled_dot_product_attention(*inputs, is_causal=True).to(dtype)
        else:
            out = eager_attention(q, k, v, matmul if fp32_products else torch.matmul)
        out.sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 products native on this CPU: "
          f"{bf16_matmul_is_native('cpu')}\n")
    columns = [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False),
               ("bf16, fp32 products", torch.bfloat16, True)]
    print("| product (GFLOP/s) | " + " | ".join(name for name, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    flops = 2 * TOKENS * WIDTH * FFN
    rates = {name: {label: flops / seconds(work, args.repeats) / 1e9
                    for label, work in linear_products(dtype, widened).items()} for name, dtype, widened in columns}
    for label in rates["fp32"]:
        print(f"| {label} | " + " | ".join(f"{rates[name][label]:.1f}" for name, _, _ in columns) + " |")
    print("\n| attention, forward + backward (s) | " + " | ".join(name for name, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for kind in ("eager", "sdpa"):
        timings = [seconds(attention_step(dtype, kind, widened), args.repeats) for _, dtype, widened in columns]
        print(f"| {kind} | " + " | ".join(f"{value:.2f}" for value in timings) + " |")


if __name__ == "__main__":
    main()
