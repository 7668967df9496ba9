"""Step time and state bytes of the low-rank optimizers against torch's AdamW on a small random Llama
(by default the model, vocabulary, batch and rank of benchmarks/optim_loss.py); with ``--eight-bit``, the
8-bit AdamW update alone against bitsandbytes' and torchao's on SmolLM2-135M's parameters.

Every optimizer gets its own copy of one randomly initialised model and the same fixed gradients.
Steps are timed one at a time, interleaved across optimizers, and split into refresh steps (SVD /
top-ℓ1 / new subspace) and ordinary steps; the amortised time refreshes every ``--amortise-gap``
steps (default 50, the T of benchmarks/optim_loss.py). Ratios are medians against AdamW measured in the same
run. "train step" adds one forward+backward (median) to both sides of the ratio.

    .venv/bin/python benchmarks/optim_step.py [--size 5m] [--vocab 2048] [--rank 48]
    .venv/bin/python benchmarks/optim_step.py --eight-bit [--repeats 7]

``--eight-bit``: every optimizer steps its own copy of the offline SmolLM2-135M-Instruct's parameters (fp32,
and bf16 for the 16-bit-weight rows) with the same fixed random gradients; steps are interleaved
(benchmarks/timing.py), medians reported beside bitsandbytes' AdamW8bit on the same weights' dtype.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from timing import interleaved_medians

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


def eight_bit_optimizers(dtype: torch.dtype) -> dict[str, tuple[torch.optim.Optimizer, list[torch.Tensor]]]:
    """leantrain's AdamW8bit, bitsandbytes' and torchao's (where installed) and torch's AdamW (moments in the
    weights' dtype), each
    over its own copy of SmolLM2-135M's parameters in ``dtype`` with the same gradients; bf16 weights round
    stochastically in leantrain and torchao (``bf16_stochastic_round``), to nearest in the others."""
    from leantrain.models.presets import build_model

    model = build_model("smollm2").to(dtype)
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator).mul_(1e-3).to(dtype) for p in model.parameters()]

    def fresh_parameters() -> list[torch.Tensor]:
        params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad.clone()
        return params

    makers = {"torch AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.0),
              "leantrain AdamW8bit": lambda p: lo.AdamW8bit(p, lr=1e-3)}
    try:
        import bitsandbytes
        makers["bitsandbytes AdamW8bit"] = lambda p: bitsandbytes.optim.AdamW8bit(p, lr=1e-3, weight_decay=0.0)
    except ImportError:
        print("bitsandbytes is not installed (pip install -e '.[bench]'): its row is left out")
    try:
        from torchao.optim import AdamW8bit
        makers["torchao AdamW8bit"] = lambda p: AdamW8bit(p, lr=1e-3, weight_decay=0.0,
                                                          bf16_stochastic_round=dtype == torch.bfloat16)
    except ImportError:
        print("torchao is not installed (pip install -e '.[bench]'): its row is left out")
    optimizers = {}
    for name, make in makers.items():
        params = fresh_parameters()
        optimizers[name] = (make(params), params)
    return optimizers


def eight_bit_medians(dtype: torch.dtype, repeats: int) -> dict[str, tuple[float, int]]:
    """Each optimizer of :func:`eight_bit_optimizers`: its median step in seconds and its state bytes."""
    optimizers = eight_bit_optimizers(dtype)

    def step(name: str) -> float:
        start = time.perf_counter()
        optimizers[name][0].step()
        return time.perf_counter() - start

    medians = interleaved_medians(step, optimizers, repeats)
    return {name: (seconds, lo.optimizer_state_bytes(optimizers[name][0])) for name, seconds in medians.items()}


def eight_bit(repeats: int) -> None:
    """Print the median step of each 8-bit AdamW, and its ratio to bitsandbytes', on fp32 and on bf16 weights."""
    print(f"8-bit AdamW update alone: SmolLM2-135M-Instruct's parameters; {repeats} interleaved steps each after one "
          f"warm-up; torch {torch.__version__}, {torch.get_num_threads()} threads")
    for dtype in (torch.float32, torch.bfloat16):
        rows = eight_bit_medians(dtype, repeats)
        reference = rows.get("bitsandbytes AdamW8bit", (None,))[0]
        print(f"\n{str(dtype).removeprefix('torch.')} weights")
        header = f"{'optimizer':<28}{'step ms':>9}{'× bitsandbytes':>16}{'state MiB':>11}"
        print(header + "\n" + "-" * len(header))
        for name, (seconds, state) in rows.items():
            ratio = f"{seconds / reference:16.2f}" if reference else f"{'-':>16}"
            print(f"{name:<28}{seconds * 1e3:9.1f}{ratio}{state / 2**20:11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eight-bit", action="store_true",
                        help="time the 8-bit AdamW update alone against bitsandbytes' and torchao's")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved steps per 8-bit optimizer")
    parser.add_argument("--size", default="5m", help="a key of leantrain.models.llama_sizes.LLAMA_SIZES")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--rank", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per optimizer")
    parser.add_argument("--gap", type=int, default=5, help="refresh gap while timing (to sample refresh steps)")
    parser.add_argument("--amortise-gap", type=int, default=50, help="refresh gap T of the amortised time")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    args = parser.parse_args()
    if args.eight_bit:
        eight_bit(args.repeats)
        return

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
