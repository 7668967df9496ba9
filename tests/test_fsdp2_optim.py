"""The low-rank optimizers under FSDP2 (weights sharded by rows over 2 CPU processes on gloo) equal
the same optimizer in one process fed the same (full) gradients. Shapes cover both projected sides
and uneven row shards. One pair of processes runs every check."""

import pytest
import torch
from distributed import run_distributed
from torch import nn

# name -> (class name, constructor keywords); update_proj_gap=2 over 4 steps refreshes twice
OPTIMIZERS = {
    "galore": ("GaLoreAdamW", {"scale": 0.5}),
    "fira": ("FiraAdamW", {"scale": 0.5}),
    "fira_official": ("FiraAdamW", {"scale": 0.5, "residual": "official"}),
    "frugal_svd": ("FrugalAdamW", {"subspace": "svd"}),
    "frugal_random": ("FrugalAdamW", {"subspace": "random"}),
    "frugal_randperm": ("FrugalAdamW", {"subspace": "randperm"}),
    "frugal_blocks": ("FrugalAdamW", {"subspace": "blocks", "density": 0.5}),
    "dct": ("DCTAdamW", {}),
}
STEPS = 4


def model() -> nn.Module:
    torch.manual_seed(0)  # weights 13×24 (side left, rows 7 + 6), 24×13 (right), 5×24 (left, rows 3 + 2)
    return nn.Sequential(nn.Linear(24, 13), nn.Tanh(), nn.Linear(13, 24), nn.Tanh(), nn.Linear(24, 5))


def optimizer(name: str, net: nn.Module) -> torch.optim.Optimizer:
    import leantrain.optim as optim

    class_name, keywords = OPTIMIZERS[name]
    matrices = [p for p in net.parameters() if p.dim() == 2]
    vectors = [p for p in net.parameters() if p.dim() == 1]
    groups = [{"params": vectors}, {"params": matrices, "rank": 3}]
    return getattr(optim, class_name)(groups, lr=1e-2, weight_decay=0.1, update_proj_gap=2, **keywords)


def largest_difference_from_one_process(name: str, rank: int) -> float:
    from torch.distributed.fsdp import fully_shard

    sharded, reference = model(), model()
    for layer in sharded[::2]:
        fully_shard(layer)
    fully_shard(sharded)
    sharded_optimizer, reference_optimizer = optimizer(name, sharded), optimizer(name, reference)
    generator = torch.Generator().manual_seed(rank)  # each rank its own data
    worst = 0.0
    for _ in range(STEPS):
        x, y = torch.randn(8, 24, generator=generator), torch.randn(8, 5, generator=generator)
        nn.functional.mse_loss(sharded(x), y).backward()
        for p, q in zip(sharded.parameters(), reference.parameters(), strict=True):
            q.grad = p.grad.full_tensor()  # the averaged gradient, as one process on both ranks' data would see it
        sharded_optimizer.step()
        reference_optimizer.step()
        sharded_optimizer.zero_grad()
        for p, q in zip(sharded.parameters(), reference.parameters(), strict=True):
            worst = max(worst, float((p.full_tensor() - q).abs().max() / q.abs().max()))
    return worst


def refusal_of_column_sharding() -> str:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    import leantrain.optim as optim

    weight = nn.Parameter(distribute_tensor(torch.randn(8, 6), init_device_mesh("cpu", (2,)), [Shard(1)]))
    try:
        optim.GaLoreAdamW([{"params": [weight], "rank": 2}])
    except ValueError as error:
        return str(error)
    return "no error"


def worker(rank: int, world: int) -> dict[str, object]:
    results: dict[str, object] = {name: largest_difference_from_one_process(name, rank) for name in OPTIMIZERS}
    results["refuse_column_sharding"] = refusal_of_column_sharding()
    return results


@pytest.fixture(scope="module")
def results():
    return run_distributed(worker)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_under_fsdp2_equals_one_process(results, name):
    for rank_results in results:
        assert rank_results[name] < 1e-5


def test_other_shardings_are_refused_at_construction(results):
    for rank_results in results:
        assert "Shard(0) on a 1-D mesh" in rank_results["refuse_column_sharding"]
