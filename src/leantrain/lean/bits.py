"""Bool tensors packed 8 to a byte (uint8), and back."""

from __future__ import annotations

import torch
from torch import Tensor

_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """Flatten a bool tensor and pack it to ``ceil(numel / 8)`` uint8 values."""
    flat = mask.reshape(-1).to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, -flat.numel() % 8))
    return (flat.view(-1, 8) << _SHIFTS.to(flat.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of ``pack_bits``: the bool tensor of ``shape``."""
    bits = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(-1)[: shape.numel()].view(shape).bool()
