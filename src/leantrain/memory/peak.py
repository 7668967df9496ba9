"""Measured peak memory of one training step (docs/design.md, "How figures are measured").

CUDA: ``torch.cuda.max_memory_allocated`` around the step, minus what was allocated before it.
CPU: a fresh subprocess fixes glibc's mmap threshold, imports what the builder needs (its ``warm()``, if
it has one: a ``StepSpec`` builds its model on the meta device, which allocates nothing), returns freed
heap to the OS (``malloc_trim``), resets its peak RSS (``/proc/self/clear_refs``), builds the model,
batch and optimizer, and runs the step. ``step_bytes`` is the peak RSS during the step minus the RSS just
before it. ``total_bytes`` is the whole training footprint: the peak RSS from before the model was built
(so a build that makes an fp32 copy on the way shows) through that step and a second one (whose backward
runs with the optimizer states the first step made), minus the RSS before the build — weights, gradients,
optimizer states and activations, without the libraries the process loaded; on CUDA the peak of
allocated bytes around the one step. The fixed threshold makes
every tensor above 64 KiB its own mapping, unmapped when freed, so RSS follows the live bytes; with
glibc's default sliding threshold, freed activations stay in the heap and the same BERT-base LoRA
step read anywhere from 1.3× to 1.8× its saved bytes across runs (1.05×, every run, with it).
The subprocess gets a picklable *builder*: a callable returning ``(model, batch, optimizer)``
(``PickledStep`` for a model already in memory, ``leantrain.plan.step_spec.StepSpec`` for one rebuilt
from a name).
"""

from __future__ import annotations

import gc
import multiprocessing
import queue
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.memory.allocator import fix_mmap_threshold, trim_heap
from leantrain.memory.step import training_step

Step = tuple[nn.Module, "dict[str, Tensor] | Tensor", "torch.optim.Optimizer | None"]


@dataclass(frozen=True)
class PeakMemory:
    """Peak of one step above what was resident just before it, and what that was."""

    step_bytes: int
    resident_bytes: int
    method: str
    total_bytes: int | None = None  # peak above the footprint before the model was built


def cuda_peak(run_step: Callable[[], object], device: torch.device) -> PeakMemory:
    torch.cuda.synchronize(device)
    gc.collect()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run_step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return PeakMemory(peak - before, before, "cuda max_memory_allocated", peak)


@dataclass(frozen=True)
class PickledStep:
    """Builder that loads ``(model, batch, optimizer)`` saved with ``torch.save`` (whole objects)."""

    path: str

    def __call__(self) -> Step:
        return torch.load(self.path, weights_only=False)


def proc_status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB: "VmRSS" (resident now), "VmHWM" (the high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _warm_up() -> None:
    """One tiny AdamW step first, so that one-time process costs (thread pools, lazy imports,
    library workspaces) are resident before the measured step instead of counted in it."""
    layer = nn.Linear(64, 64)
    layer(torch.randn(8, 64)).sum().backward()
    torch.optim.AdamW(layer.parameters()).step()


def _child(build: Callable[[], Step], results: multiprocessing.Queue) -> None:
    try:
        if not fix_mmap_threshold():  # RSS follows the live bytes (memory/allocator.py)
            raise RuntimeError("mallopt(M_MMAP_THRESHOLD) failed")
        _warm_up()
        if hasattr(build, "warm"):
            build.warm()
        gc.collect()
        trim_heap()
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        before_build = proc_status_kib("VmRSS")
        model, batch, optimizer = build()
        built = proc_status_kib("VmHWM")
        gc.collect()
        trim_heap()
        Path("/proc/self/clear_refs").write_text("5")
        before = proc_status_kib("VmRSS")
        training_step(model, batch, optimizer)
        peak = proc_status_kib("VmHWM")
        if optimizer is not None:  # the total is the steady state's: a second step holds the states from its start
            optimizer.zero_grad(set_to_none=True)
            training_step(model, batch, optimizer)
        total = (max(built, proc_status_kib("VmHWM")) - before_build) * 1024
        results.put(((peak - before) * 1024, before * 1024, total, None))
    except BaseException as error:  # report any failure to the parent instead of dying silently
        results.put((0, 0, 0, f"{type(error).__name__}: {error}"))


def cpu_peak_in_subprocess(build: Callable[[], Step]) -> PeakMemory:
    """Run ``build()`` and one training step in a fresh (spawned) Python process; Linux only."""
    if not Path("/proc/self/clear_refs").exists():
        raise RuntimeError("CPU peak memory needs Linux /proc (peak RSS of a subprocess)")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(build, results))
    process.start()
    while True:  # a child that dies without reporting (killed, a crash in native code) must not hang us
        try:
            step_bytes, resident_bytes, total_bytes, error = results.get(timeout=1.0)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(f"peak-memory subprocess died with exit code {process.exitcode} before "
                                   "reporting (killed for memory?)") from None
    process.join()
    if error is not None:
        raise RuntimeError(f"peak-memory subprocess failed: {error}")
    return PeakMemory(step_bytes, resident_bytes, "cpu peak RSS of a fresh subprocess", total_bytes)


def cpu_peak_of_objects(model: nn.Module, batch: dict[str, Tensor] | Tensor,
                        optimizer: torch.optim.Optimizer | None) -> PeakMemory:
    """``cpu_peak_in_subprocess`` for objects in memory: they reach the child through a temp file."""
    with tempfile.TemporaryDirectory(prefix="leantrain-peak-") as folder:
        path = str(Path(folder) / "step.pt")
        torch.save((model, batch, optimizer), path)
        return cpu_peak_in_subprocess(PickledStep(path))
