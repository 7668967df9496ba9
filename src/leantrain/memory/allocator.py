"""Freed tensors back to the operating system (glibc).

glibc serves an allocation from its heap below the mmap threshold and from its own ``mmap`` above it, and
slides the threshold up to the size of each mmapped block freed (up to 32 MiB). After the first large
tensors are freed, later ones land in the heap, whose freed pages mostly stay resident: the RSS then
follows the most bytes ever live plus fragmentation, not the live bytes. Two remedies:

- ``fix_mmap_threshold``: every tensor of 64 KiB or more in its own mapping, returned when freed. The RSS
  follows the live bytes, which is what a memory measurement wants (memory/peak.py), but each large
  allocation then faults fresh pages: an RL step of SmolLM2-135M took 1.6x as long.
- ``trim_heap`` (``malloc_trim``): the free pages of the heap returned at a point of the program, for the
  cost of faulting them again when reused. The RL recipe trims before each micro-batch and after
  generation: the same RL step peaked at 2.1 GiB instead of 2.4 GiB (3.5 GiB in micro-batches of 4,096
  tokens), 4 % slower (BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 64 * 1024


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; False where the C library is not
    glibc (nothing changed)."""
    libc = _libc()
    return libc is not None and hasattr(libc, "mallopt") and libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1


def trim_heap() -> bool:
    """Return the heap's free pages to the operating system; False where the C library is not glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True
