"""Block-wise 8-bit optimizer state (Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization, 2110.02861).

The algorithm of torchao 0.18's ``OptimState8bit``: the tensor is cut into blocks of 256 values (§2.1);
each block keeps its absmax s (fp32) and each value x the uint8 code c of the dynamic map entry
nearest to x/s (§2.2, the dynamic tree map without zero padding: 256 sorted values in [-1, 1] signed,
[0, 1] unsigned, finer near 0), so x ≈ map[c]·s. 1 + 4/256 bytes per value instead of 4.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

BLOCK_SIZE = 256
MIN_NUMEL = 4096  # smaller tensors stay fp32 (bitsandbytes' and torchao's rule)


def quantizable(tensor: Tensor) -> bool:
    """Whether an optimizer keeps ``tensor``'s state 8-bit: ≥ 4096 values, whole blocks (torchao's rule)."""
    return tensor.numel() >= MIN_NUMEL and tensor.numel() % BLOCK_SIZE == 0


@lru_cache(maxsize=8)
def dynamic_map(signed: bool, device: torch.device | str = "cpu") -> Tensor:
    """The 256 sorted fp32 code values: 0, 1 and, per decade 10^(i−6)·[0.1, 1] (i = 0…6), the midpoints
    of 2^i (signed: ± each) or 2^(i+1) equal cells; the same fp32 arithmetic as torchao's ``create_dynamic_map``."""
    values = [torch.tensor([0.0, 1.0])]
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, (2**i if signed else 2 ** (i + 1)) + 1)
        means = (10 ** (i - 6)) * ((boundaries[:-1] + boundaries[1:]) / 2.0)
        values += [means, -means] if signed else [means]
    return torch.cat(values).sort().values.to(device)


@lru_cache(maxsize=8)
def search_tables(signed: bool, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """What ``copy_`` finds the nearest map entry with, in a few passes instead of a binary search:

    - ``floor[b]`` (int32), for each of the 2^16 buckets of fp32 values sharing their top 16 bits (sign,
      exponent, 7 mantissa bits: 0.8% wide; indexed by the bits as a signed int16, so negative buckets
      wrap), the last map entry ≤ the bucket's smallest value (−1 if none). The map's entries are ≥ 1.4%
      apart, so a bucket holds at most one: the last entry ≤ x is ``floor`` or the next one;
    - ``entries``: the map with +∞ appended (the entry after the last);
    - ``half_gap[k]`` = (map[k+1] − map[k])·0.5 in fp32, +∞ for the last: x goes up from entry k iff
      x − map[k] ≥ half_gap[k], torchao's rounding with the same arithmetic.
    """
    code_map = dynamic_map(signed)
    bits = torch.arange(2**16, dtype=torch.int64)
    smallest = torch.where(bits < 2**15, bits << 16, (bits << 16) | 0xFFFF).to(torch.int32).view(torch.float32)
    largest = torch.where(bits < 2**15, (bits << 16) | 0xFFFF, bits << 16).to(torch.int32).view(torch.float32)
    floor = torch.searchsorted(code_map, smallest, right=True) - 1
    finite = torch.isfinite(smallest) & torch.isfinite(largest)
    if ((torch.searchsorted(code_map, largest, right=True) - 1 - floor)[finite] > 1).any():
        raise RuntimeError("a 16-bit bucket of fp32 values holds two map entries: the bucket search would be wrong")
    infinity = torch.tensor([torch.inf])
    half_gap = torch.cat([(code_map[1:] - code_map[:-1]) * 0.5, infinity])
    return floor.to(torch.int32).to(device), torch.cat([code_map, infinity]).to(device), half_gap.to(device)


class QuantizedState:
    """One 8-bit tensor: ``codes`` (uint8, the tensor's shape) and ``scales`` (fp32, one absmax per block).

    ``signed`` picks the map (signed for Adam's first moment, unsigned for the second). ``codes`` and
    ``scales`` are plain tensors, updated in place by :meth:`copy_`, so an optimizer can keep them in
    its state dict.
    """

    def __init__(self, codes: Tensor, scales: Tensor, signed: bool) -> None:
        if codes.dtype != torch.uint8 or scales.dtype != torch.float32 or scales.dim() != 1:
            raise ValueError(f"codes must be uint8 and scales a 1-D float32 tensor, got {codes.dtype} codes and "
                             f"{scales.dim()}-D {scales.dtype} scales")
        if codes.numel() != scales.numel() * BLOCK_SIZE:
            raise ValueError(f"{codes.numel()} codes need {codes.numel() / BLOCK_SIZE:g} scales (one per "
                             f"{BLOCK_SIZE} values), got {scales.numel()}")
        self.codes, self.scales, self.signed = codes, scales, signed

    @classmethod
    def zeros(cls, shape: torch.Size | tuple[int, ...], signed: bool,
              device: torch.device | str | None = None) -> QuantizedState:
        """A state that dequantizes to zeros (all scales 0, as torchao's ``OptimState8bit.zeros``)."""
        numel = torch.Size(shape).numel()
        if numel % BLOCK_SIZE:
            raise ValueError(f"shape={tuple(shape)} has {numel} values, not a multiple of the block size {BLOCK_SIZE}")
        codes = torch.zeros(shape, dtype=torch.uint8, device=device)
        return cls(codes, torch.zeros(numel // BLOCK_SIZE, device=device), signed)

    def dequantize(self, blocks: slice = slice(None)) -> Tensor:
        """map[c]·s, fp32: in the codes' shape, or of the ``blocks`` (a slice of block indices) as (n, 256)."""
        codes = self.codes.view(-1, BLOCK_SIZE)[blocks]
        values = dynamic_map(self.signed, self.codes.device)[codes.int()] * self.scales[blocks].view(-1, 1)
        return values.view(self.codes.shape) if blocks == slice(None) else values

    def copy_(self, values: Tensor, blocks: slice = slice(None)) -> QuantizedState:
        """Quantize ``values`` (the codes' shape, or the ``blocks``' values) into this state: per block
        s = max(absmax, 1e-12), then each x/s to the nearest map entry, a tie going up (torchao's rounding)."""
        target = self.codes.view(-1, BLOCK_SIZE)[blocks]
        if values.numel() != target.numel() or (blocks == slice(None) and values.shape != self.codes.shape):
            raise ValueError(f"values of shape {tuple(values.shape)} cannot go into a state of shape "
                             f"{tuple(self.codes.shape)}" + ("" if blocks == slice(None) else f" at blocks {blocks}"))
        block_values = values.float().reshape(-1, BLOCK_SIZE)
        scales = block_values.abs().amax(-1).clip(1e-12)
        scaled = block_values / scales.view(-1, 1)
        floor, entries, half_gap = search_tables(self.signed, self.codes.device)
        below = floor[scaled.view(torch.int32) >> 16]  # the top 16 bits, as a signed index
        below += entries[below + 1] <= scaled  # the last entry ≤ x/s (a binary search's answer), or −1 if none:
        below.clamp_(min=0)  # the signed map starts at −0.993, so x/s in [−1, −0.993) takes the first entry
        target.copy_(below + (scaled - entries[below] >= half_gap[below]))  # the nearest, a tie going up
        self.scales[blocks] = scales
        return self
