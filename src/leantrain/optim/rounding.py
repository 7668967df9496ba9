"""Rounding fp32 values into bf16 storage: to nearest, or stochastically without bias.

Stochastic rounding (Gupta et al. 2015, "Deep Learning with Limited Numerical Precision", §3) rounds x
up to the next bf16 value with probability equal to its distance from the bf16 value below (in units of
the gap), so E[round(x)] = x: an update far smaller than a weight's bf16 spacing still moves the weight
on average, where round-to-nearest drops it every time. On the bit pattern: bf16 is the top 16 bits of
fp32; with f the low 16 bits and u a uniform 16-bit integer, round up (away from zero: the patterns are
sign-magnitude) iff u < f, else truncate — the rule of torchao's ``_fp32_to_bf16_sr`` (and Q-GaLore's),
so the same random integers give the same bits. It is computed as (bits + 0xFFFF − u) & 0xFFFF0000, whose
carry into the top 16 bits happens iff u < f: three integer passes instead of a select over four
temporaries. The integers u come four to a 64-bit draw (:func:`uniform_16bit`): a quarter of the generator's calls of
one draw per value, which took most of the time. Values are rounded 1 Mi at a time, so the temporaries
stay a few MiB whatever the tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 2**20
LOW_BITS = 0xFFFF
HIGH_BITS = -0x10000  # 0xFFFF0000 as an int32


def uniform_16bit(count: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """``count`` uniform integers in [0, 2^16) (int32): 64-bit draws over the whole int64 range, each cut into its
    four 16-bit lanes, written lane by lane (the first lanes of all draws, then the second, ...)."""
    words = torch.empty(-(-count // 4), dtype=torch.int64, device=device).random_(-(2**63), None, generator=generator)
    draws = torch.empty(4, len(words), dtype=torch.int32, device=device)
    for lane in range(4):
        torch.bitwise_and(words >> (16 * lane), LOW_BITS, out=draws[lane])
    return draws.view(-1)[:count]


def stochastic_round_(out: Tensor, source: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Write fp32 ``source`` into bf16 ``out`` (same shape), each value rounded up with probability equal to its
    fraction of the bf16 gap; ``generator`` draws the 16-bit integers. Returns ``out``."""
    if source.dtype != torch.float32 or out.dtype != torch.bfloat16 or source.shape != out.shape:
        raise ValueError(f"stochastic rounding writes an fp32 tensor into a bf16 one of its shape, got "
                         f"{source.dtype} {tuple(source.shape)} into {out.dtype} {tuple(out.shape)}")
    values, target = source.reshape(-1), out.view(-1)
    for start in range(0, values.numel(), CHUNK):
        bits = values[start:start + CHUNK].contiguous().view(torch.int32)
        draws = uniform_16bit(bits.numel(), generator, bits.device)
        rounded = torch.sub(bits, draws, out=draws).add_(LOW_BITS).bitwise_and_(HIGH_BITS)
        target[start:start + CHUNK] = rounded.view(torch.float32)  # exact: the low 16 bits are zero
    return out
