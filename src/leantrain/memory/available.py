"""How many bytes a new allocation can take without swapping: Linux's MemAvailable on CPU, the free device
memory on CUDA. The planner and the model builder refuse work estimated above ``FRACTION`` of it."""

from __future__ import annotations

from pathlib import Path

import torch

FRACTION = 0.9  # what a run may take of the available memory; the rest is left to everything else


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Bytes the system (or the CUDA device) can still give this process."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable: cannot tell the free memory")


def check_fits(estimate: int, what: str, device: torch.device | str = "cpu") -> None:
    """Raise MemoryError, before anything is allocated, when ``estimate`` bytes exceed FRACTION of what is available."""
    free = available_bytes(device)
    if estimate > FRACTION * free:
        raise MemoryError(f"{what} needs about {estimate / 2**30:.1f} GiB, more than {FRACTION:.0%} of the "
                          f"{free / 2**30:.1f} GiB available: not started")
