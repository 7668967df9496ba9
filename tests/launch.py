"""Run a picklable function in spawned CPU processes set up exactly as ``torchrun`` sets them up
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment), so that Accelerate, and
through it the engine, joins the gloo process group itself."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    try:
        results[rank] = fn(*args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """``fn(*args)`` in ``world`` torchrun-like processes; each rank's result (it must pickle), by rank."""
    port = _free_port()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_entry, args=(world, port, fn, args, results), nprocs=world, join=True)
        return [results[rank] for rank in range(world)]
