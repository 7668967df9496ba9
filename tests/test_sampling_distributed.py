"""Sampled layers under DistributedDataParallel: 2 CPU processes over gloo."""

import torch
from distributed import run_distributed
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import leantrain as lt


def _worker(rank: int, world: int) -> tuple:
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
    return losses, [p.detach().clone() for p in model.parameters()], kept.indices.clone()


def test_ddp_trains_with_identical_replicas_and_per_rank_draws():
    (losses0, params0, kept0), (losses1, params1, kept1) = run_distributed(_worker)
    assert all(torch.equal(a, b) for a, b in zip(params0, params1, strict=True))  # gradients were averaged
    assert losses0[-1] < 0.8 * losses0[0] and losses1[-1] < 0.8 * losses1[0]
    assert not torch.equal(kept0, kept1)  # ranks draw their own rows
