"""Sampled layers under DistributedDataParallel: 2 CPU processes over gloo."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import leantrain as lt


def _worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
    lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.25, seed=3), targets="all-linear")
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(rank)  # each rank its own data
    x, y = torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    kept = model[0].sampler.draw(x)
    results[rank] = (losses, [p.detach().clone() for p in model.parameters()], kept.indices.clone())
    dist.destroy_process_group()


def test_ddp_trains_with_identical_replicas_and_per_rank_draws():
    port = 29500 + os.getpid() % 1000
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, port, results), nprocs=2, join=True)
        (losses0, params0, kept0), (losses1, params1, kept1) = results[0], results[1]
    assert all(torch.equal(a, b) for a, b in zip(params0, params1, strict=True))  # gradients were averaged
    assert losses0[-1] < 0.8 * losses0[0] and losses1[-1] < 0.8 * losses1[0]
    assert not torch.equal(kept0, kept1)  # ranks draw their own rows
