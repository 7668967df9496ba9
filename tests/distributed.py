"""Run a picklable function in 2 spawned CPU processes, the tests' stand-in for ``torchrun``.

``run_distributed(fn, *args)`` joins a gloo process group itself and calls ``fn(rank, world, *args)``:
for parts used directly. ``launch(fn, *args)`` sets the environment exactly as ``torchrun`` does
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and calls ``fn(*args)``: Accelerate, and through it
the engine, joins the group itself. Either returns each rank's result (it must pickle), by rank; a
failure in any rank raises here with that rank's traceback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entry(rank: int, world: int, port: int, join: bool, fn: Callable[..., Any], args: tuple, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if not join:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    if join:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results[rank] = fn(rank, world, *args) if join else fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(join: bool, fn: Callable[..., Any], args: tuple, world: int) -> list[Any]:
    port = _free_port()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_entry, args=(world, port, join, fn, args, results), nprocs=world, join=True)
        return [results[rank] for rank in range(world)]


def run_distributed(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """``fn(rank, world, *args)`` in ``world`` processes joined by a gloo group; ``fn`` module-level."""
    return _spawn(True, fn, args, world)


def launch(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """``fn(*args)`` in ``world`` processes set up as ``torchrun`` sets them up."""
    return _spawn(False, fn, args, world)


def assert_same_records(two: list[dict], one: list[dict], rel: float = 1e-4, abs: float = 1e-6) -> None:
    """The records of a 2-process run equal the 1-process run's, step by step and key by key."""
    import pytest

    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(two, one, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=abs), key
