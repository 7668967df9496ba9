"""Run a picklable function in spawned CPU processes joined by a gloo process group (the tests'
stand-in for ``torchrun``)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # a rank that fails alone leaves the other waiting in a collective: give up after two minutes
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    try:
        results[rank] = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """``fn(rank, world, *args)`` in ``world`` processes; returns each rank's result, by rank.

    ``fn`` must be a module-level function; its results must pickle (plain numbers, strings, or
    small tensors). A failure in any rank raises here with that rank's traceback."""
    port = _free_port()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_entry, args=(world, port, fn, args, results), nprocs=world, join=True)
        return [results[rank] for rank in range(world)]
