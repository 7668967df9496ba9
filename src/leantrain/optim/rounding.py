"""Rounding fp32 values into bf16 storage: to nearest, or stochastically without bias.

Stochastic rounding (Gupta et al. 2015, "Deep Learning with Limited Numerical Precision", §3) rounds x
up to the next bf16 value with probability equal to its distance from the bf16 value below (in units of
the gap), so E[round(x)] = x: an update far smaller than a weight's bf16 spacing still moves the weight
on average, where round-to-nearest drops it every time. On the bit pattern: bf16 is the top 16 bits of
fp32; with f the low 16 bits and u a uniform 16-bit integer, round up (away from zero: the patterns are
sign-magnitude) iff u < f, else truncate — the rule of torchao's ``_fp32_to_bf16_sr`` (and Q-GaLore's),
so the same random integers give the same bits. Values are rounded 1 Mi at a time, so the temporaries
stay a few MiB whatever the tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 2**20
LOW_BITS = 0xFFFF
HIGH_BITS = -0x10000  # 0xFFFF0000 as an int32


def stochastic_round_(out: Tensor, source: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Write fp32 ``source`` into bf16 ``out`` (same shape), each value rounded up with probability equal to its
    fraction of the bf16 gap; ``generator`` draws the 16-bit integers. Returns ``out``."""
    if source.dtype != torch.float32 or out.dtype != torch.bfloat16 or source.shape != out.shape:
        raise ValueError(f"stochastic rounding writes an fp32 tensor into a bf16 one of its shape, got "
                         f"{source.dtype} {tuple(source.shape)} into {out.dtype} {tuple(out.shape)}")
    values, target = source.reshape(-1), out.view(-1)
    for start in range(0, values.numel(), CHUNK):
        bits = values[start:start + CHUNK].contiguous().view(torch.int32)
        draws = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device, generator=generator)
        truncated = bits & HIGH_BITS
        rounded = torch.where(draws < (bits & LOW_BITS), truncated + 0x10000, truncated)
        target[start:start + CHUNK] = rounded.view(torch.float32)  # exact: the low 16 bits are zero
    return out
