"""Block-wise 8-bit optimizer state (Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization, 2110.02861).

The algorithm of torchao 0.18's ``OptimState8bit``: the tensor is cut into blocks of 256 values (§2.1);
each block keeps its absmax s (fp32) and each value x the uint8 code c of the dynamic map entry
nearest to x/s (§2.2, the dynamic tree map without zero padding: 256 sorted values in [-1, 1] signed,
[0, 1] unsigned, finer near 0), so x ≈ map[c]·s. 1 + 4/256 bytes per value instead of 4.

Both directions are table look-ups (:func:`look_up`), the costly part on a CPU: one per value to quantize
(:func:`rounding_table`, by the value's top 16 bits) and one per two values to dequantize (:func:`pair_table`):
the update takes 0.59x bitsandbytes' AdamW8bit step on SmolLM2-135M (BENCHMARKS.md, "The 8-bit AdamW update").
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


def nearest_codes(scaled: Tensor, signed: bool) -> Tensor:
    """The code of the map entry nearest to each value of ``scaled`` (in [−1, 1]), a tie going up: with k the
    last entry ≤ x (the first if none), x goes up to k + 1 iff x − map[k] ≥ (map[k+1] − map[k])·0.5 in fp32,
    torchao's rounding with the same arithmetic. A binary search: the reference :func:`rounding_table` is built from."""
    code_map = dynamic_map(signed, scaled.device)
    half_gap = torch.cat([(code_map[1:] - code_map[:-1]) * 0.5, torch.tensor([torch.inf], device=scaled.device)])
    below = (torch.searchsorted(code_map, scaled, right=True) - 1).clamp_(min=0)
    return below + (scaled - code_map[below] >= half_gap[below])


@lru_cache(maxsize=8)
def rounding_table(signed: bool, device: torch.device | str = "cpu") -> Tensor:
    """What ``copy_`` rounds with, one look-up instead of a binary search: for each of the 2^16 buckets of fp32
    values sharing their top 16 bits (sign, exponent, 7 mantissa bits: 0.8% wide), indexed by those bits as a
    signed int16 plus 2^15, one int64 packing two 32-bit values (in memory order, ``.view(torch.int32)``):

    - ``threshold[b]`` (fp32 bits): the bucket's lowest value whose code is one more than its lowest value's,
      +∞ if none;
    - ``code_low[b]`` (int32): :func:`nearest_codes` of the bucket's lowest value.

    The map's entries, and so the points where the code steps up, are ≥ 1.4% apart, so the code steps at most
    once inside a bucket: x's code is ``code_low[b] + (x ≥ threshold[b])``, exactly :func:`nearest_codes`
    (the thresholds are found by bisection on it). Buckets of infinities and NaNs get the code of 0 and +∞.
    """
    top = torch.arange(2**16, dtype=torch.int64)  # the top 16 bits as an unsigned number
    negative = top >= 2**15

    def values(offset: Tensor) -> Tensor:  # the bucket's fp32 values in increasing order, offset 0 … 2^16 − 1
        low_bits = torch.where(negative, 2**16 - 1 - offset, offset)
        return ((top << 16) | low_bits).to(torch.int32).view(torch.float32)

    finite = torch.isfinite(values(torch.zeros_like(top))) & torch.isfinite(values(torch.full_like(top, 2**16 - 1)))
    lowest, highest = (torch.where(finite, values(torch.full_like(top, end)), 0.0) for end in (0, 2**16 - 1))
    code_low, code_high = nearest_codes(lowest, signed), nearest_codes(highest, signed)
    if (code_high - code_low > 1).any():
        raise RuntimeError("the code steps twice inside a 16-bit bucket of fp32 values: the look-up would be wrong")
    first, last = torch.zeros_like(top), torch.full_like(top, 2**16 - 1)  # bisect for the first offset at code_high
    while (first < last).any():
        middle = (first + last) // 2
        up = nearest_codes(torch.where(finite, values(middle), 0.0), signed) == code_high
        last, first = torch.where(up, middle, last), torch.where(up, first, middle + 1)
    threshold = torch.where(finite & (code_high > code_low), values(first), torch.inf)
    order = torch.roll(torch.arange(2**16), 2**15)  # signed top bits + 2^15 → the unsigned top bits
    packed = torch.stack([threshold[order].view(torch.int32), code_low[order].to(torch.int32)], dim=1)
    return packed.view(torch.int64).view(-1).to(device)


@lru_cache(maxsize=8)
def pair_table(signed: bool, device: torch.device | str = "cpu") -> Tensor:
    """map[c0], map[c1] of every pair of adjacent codes, packed as one int64 (the two fp32 values in memory
    order), indexed by the pair read as a signed int16 plus 2^15: one look-up dequantizes two values."""
    pairs = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.uint8).view(-1, 2)
    return dynamic_map(signed)[pairs.long()].contiguous().view(torch.int64).view(-1).to(device)


def look_up(table: Tensor, keys: Tensor) -> Tensor:
    """``table[key + 2^15]`` for each signed 16-bit ``key`` (int16 or int32, 2-D): a ``gather`` from the table
    repeated along the rows by a stride-0 view, which splits the rows across threads (``index_select`` on a
    1-D table runs on one thread)."""
    indices = keys.long().add_(2**15)
    return torch.gather(table.expand(len(indices), -1), 1, indices)


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
        pairs = codes.reshape(-1, BLOCK_SIZE).view(torch.int16)  # 128 pairs a block
        values = look_up(pair_table(self.signed, self.codes.device), pairs).view(torch.float32)
        values = values.view(codes.shape).mul_(self.scales[blocks].view(-1, 1))
        return values.view(self.codes.shape) if blocks == slice(None) else values

    def copy_(self, values: Tensor, blocks: slice = slice(None)) -> QuantizedState:
        """Quantize ``values`` (the codes' shape, or the ``blocks``' values) into this state: per block
        s = max(absmax, 1e-12), then each x/s to the nearest map entry, a tie going up (torchao's rounding)."""
        target = self.codes.view(-1, BLOCK_SIZE)[blocks]
        if values.numel() != target.numel() or (blocks == slice(None) and values.shape != self.codes.shape):
            raise ValueError(f"values of shape {tuple(values.shape)} cannot go into a state of shape "
                             f"{tuple(self.codes.shape)}" + ("" if blocks == slice(None) else f" at blocks {blocks}"))
        block_values = values.float().reshape(-1, BLOCK_SIZE)
        scales = block_values.abs().amax(-1).clip_(1e-12)
        scaled = (block_values / scales.view(-1, 1)).view(-1)
        buckets = (scaled.view(torch.int32) >> 16).view(-1, BLOCK_SIZE)  # the top 16 bits, signed
        looked_up = look_up(rounding_table(self.signed, self.codes.device), buckets).view(torch.int32)
        threshold, code_low = looked_up.view(-1, 2).unbind(1)
        target.view(-1).copy_(code_low).add_(scaled >= threshold.view(torch.float32))
        self.scales[blocks] = scales
        return self
