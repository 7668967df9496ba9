"""Custom autograd Functions under ``torch.autocast``: run them as autocast runs a matmul."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function


def apply_as_autocast_matmul(function: type[Function], cast: tuple[Tensor | None, ...], *rest: Any) -> Any:
    """``function.apply(*cast, *rest)``; under autocast the tensors in ``cast`` (the matmul operands)
    are first cast to the autocast dtype and autocast is off inside, so forward and backward (which
    autocast does not cover) compute in one dtype, as the stock ops would, e.g. ``F.linear``."""
    device_type = next(t for t in cast if t is not None).device.type
    if not torch.is_autocast_enabled(device_type):
        return function.apply(*cast, *rest)
    dtype = torch.get_autocast_dtype(device_type)
    cast = tuple(None if t is None else t.to(dtype) for t in cast)
    with torch.autocast(device_type, enabled=False):
        return function.apply(*cast, *rest)
