"""Step time and state bytes of the low-rank optimizers against torch's AdamW on a small random Llama
(by default the model, vocabulary, batch and rank of benchmarks/optim_loss.py).

Every optimizer gets its own copy of one randomly initialised model and the same fixed gradients.
Steps are timed one at a time, interleaved across optimizers, and split into refresh steps (SVD /
top-ℓ1 / new subspace) and ordinary steps; the amortised time refreshes every ``--amortise-gap``
steps (default 50, the T of benchmarks/optim_loss.py). Ratios are medians against AdamW measured in the same
run. "train step" adds one forward+backward (median) to both sides of the ratio.

    .venv/bin/python benchmarks/optim_step.py [--size 5m] [--vocab 2048] [--rank 48]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import leantrain.optim as lo
from leantrain.models.llama_sizes import build_llama

LOW_RANK = ("galore", "fira", "frugal-svd", "frugal-blocks", "dct")


def build_optimizers(model: torch.nn.Module, rank: int, gap: int) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per name over its own copy of ``model`` and of its gradients."""
    models = {name: copy.deepcopy(model) for name in ["adamw", "adamw-fused", *LOW_RANK]}
    for copied in models.values():
        for source, target in zip(model.parameters(), copied.parameters(), strict=True):
            target.grad = source.grad.clone()
    groups = lambda name: lo.param_groups(models[name], rank=rank, update_proj_gap=gap)  # noqa: E731
    optimizers = {
        "adamw": torch.optim.AdamW(models["adamw"].parameters(), lr=1e-3, weight_decay=0.0),
        "adamw-fused": torch.optim.AdamW(models["adamw-fused"].parameters(), lr=1e-3, weight_decay=0.0, fused=True),
        "galore": lo.GaLoreAdamW(groups("galore"), lr=1e-3),
        "fira": lo.FiraAdamW(groups("fira"), lr=1e-3),
        "frugal-svd": lo.FrugalAdamW(groups("frugal-svd"), lr=1e-3),
        "frugal-blocks": lo.FrugalAdamW(groups("frugal-blocks"), lr=1e-3, subspace="blocks", density=0.25),
        "dct": lo.DCTAdamW(groups("dct"), lr=1e-3),
    }
    return optimizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="5m", help="a key of leantrain.models.llama_sizes.LLAMA_SIZES")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--rank", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per optimizer")
    parser.add_argument("--gap", type=int, default=5, help="refresh gap while timing (to sample refresh steps)")
    parser.add_argument("--amortise-gap", type=int, default=50, help="refresh gap T of the amortised time")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_llama(args.size, args.vocab, args.seq)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    forward_backward = []
    for _ in range(3):
        model.zero_grad()
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        forward_backward.append(time.perf_counter() - start)
    optimizers = build_optimizers(model, args.rank, args.gap)

    for optimizer in optimizers.values():  # untimed first step: allocates states, warms up LAPACK
        optimizer.step()
    times = {name: {"refresh": [], "plain": []} for name in optimizers}
    for step in range(1, args.steps + 1):
        names = list(optimizers)
        for name in names[step % len(names) :] + names[: step % len(names)]:  # rotate who goes first
            start = time.perf_counter()
            optimizers[name].step()
            elapsed = time.perf_counter() - start
            refresh = name in LOW_RANK and step % args.gap == 0
            times[name]["refresh" if refresh else "plain"].append(elapsed)

    adamw_step = statistics.median(times["adamw"]["plain"])
    adamw_bytes = lo.optimizer_state_bytes(optimizers["adamw"])
    fb = statistics.median(forward_backward)
    low_rank_params = sum(p.numel() for p in lo.param_groups(model, rank=args.rank)[1]["params"])
    print(
        f"Llama {args.size}, vocab {args.vocab}: "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {low_rank_params / 1e6:.1f}M in the "
        f"low-rank group; rank {args.rank}; {args.steps} interleaved steps each; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"forward+backward (batch {args.batch}×{args.seq}): {fb * 1e3:.0f} ms; AdamW step {adamw_step * 1e3:.1f} ms")
    header = (
        f"{'optimizer':<14}{'step ms':>9}{'refresh ms':>12}{'amortised':>11}{'× AdamW':>9}"
        f"{'train step ×':>14}{'state MiB':>11}{'state ×':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, measured in times.items():
        plain = statistics.median(measured["plain"]) if measured["plain"] else None
        refresh = statistics.median(measured["refresh"]) if measured["refresh"] else None
        gap = args.amortise_gap
        amortised = (refresh + (gap - 1) * plain) / gap if name in LOW_RANK else plain
        state = lo.optimizer_state_bytes(optimizers[name])
        cells = [f"{plain * 1e3:9.1f}" if plain else f"{'-':>9}", f"{refresh * 1e3:12.1f}" if refresh else f"{'-':>12}"]
        print(
            f"{name:<14}{''.join(cells)}{amortised * 1e3:11.1f}{amortised / adamw_step:9.2f}"
            f"{(fb + amortised) / (fb + adamw_step):14.2f}{state / 2**20:11.1f}{state / adamw_bytes:9.2f}"
        )


if __name__ == "__main__":
    main()
