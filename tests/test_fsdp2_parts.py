"""Sampled layers and every lean companion under FSDP2 (``fully_shard`` on each decoder layer, on
lm_head and on the root; 2 CPU processes on gloo) against the same model under DDP, and the
settings that are refused with a clear error. One pair of processes runs every check."""

import pytest
import torch
from distributed import run_distributed
from torch import nn

# variant -> (LlamaConfig changes, sampling?, LeanConfig keywords or None for no lean)
VARIANTS = {
    "sampling": ({}, True, None),
    "lean": ({"attention_dropout": 0.1}, False, {}),  # norms, attention with dropout, recompute, LM loss
    "lean_activations": ({}, False, {"recompute_mlp": False, "recompute_attention": False}),
    "lean_relu_dropout": ({"hidden_act": "relu"}, False, {"recompute_mlp": False, "activations": False}),
    "sampling_lean": ({}, True, {}),
    "lm_loss": ({}, False, {"dropout": False, "relu": False, "norms": False, "attention": False,
                            "recompute_mlp": False, "recompute_attention": False, "activations": False}),
}
STEPS = 2


def build(variant: str | None) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    import leantrain as lt

    changes, sampled, lean = VARIANTS[variant] if variant else ({}, False, None)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         attn_implementation="eager", use_cache=False, **changes)
    model = LlamaForCausalLM(config)
    if changes.get("hidden_act") == "relu":
        for layer in model.model.layers:  # a ReLU + nn.Dropout activation, for LeanReLU and LeanDropout
            layer.mlp.act_fn = nn.Sequential(nn.ReLU(), nn.Dropout(0.1))
    if sampled:
        lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.5, seed=3), targets="all-linear")
    if lean is not None:
        lt.apply_lean(model, lt.LeanConfig(**lean))
    return model


def shard(model: nn.Module, own_units: tuple[str, ...] = ()) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        for name in own_units:
            fully_shard(layer.get_submodule(name))
        fully_shard(layer)
    fully_shard(model.lm_head)
    fully_shard(model)


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def train(model: nn.Module, layout: str, batches: list[torch.Tensor], rank: int) -> tuple[list, list, torch.Tensor]:
    """Losses, full gradients per step and eval logits after the steps, under DDP or FSDP2."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(model) if layout == "ddp" else model
    if layout == "fsdp2":
        shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.manual_seed(100 + rank)  # dropout seeds: the same draws in both layouts
    losses, grads = [], []
    for ids in batches:
        loss = wrapped(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: full(p.grad) for name, p in model.named_parameters()})
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = wrapped(input_ids=batches[0]).logits
    return losses, grads, logits


def largest_difference(a, b) -> float:
    """Largest |a - b| over matching losses, gradients and logits, relative to the largest |b|."""
    pairs = list(zip(a[0], b[0], strict=True)) + [(x[k], y[k]) for x, y in zip(a[1], b[1], strict=True) for k in y]
    pairs.append((a[2], b[2]))
    return max(float((x - y).abs().max() / y.abs().max().clamp(min=1e-12)) for x, y in pairs)


def refusal(check) -> str:
    try:
        check()
    except ValueError as error:
        return str(error)
    return "no error"


def worker(rank: int, world: int) -> dict[str, object]:
    from torch.distributed.device_mesh import init_device_mesh

    import leantrain as lt

    init_device_mesh("cpu", (world,))
    generator = torch.Generator().manual_seed(rank)  # each rank its own data
    batches = [torch.randint(64, (2, 12), generator=generator) for _ in range(STEPS)]
    results: dict[str, object] = {}
    stock = train(build(None), "ddp", batches, rank)
    for variant in VARIANTS:
        fsdp2 = train(build(variant), "fsdp2", batches, rank)
        results[variant] = largest_difference(fsdp2, train(build(variant), "ddp", batches, rank))
        if variant == "lm_loss":
            results["lm_loss_vs_stock"] = largest_difference(fsdp2, stock)

    def activation_with_its_linear_sharded_alone():
        model = build("lean_activations")
        shard(model, own_units=("mlp.gate_proj",))
        model(input_ids=batches[0], labels=batches[0])

    def remove_lean_after_fully_shard():
        model = build("lean")
        shard(model)
        lt.remove_lean(model)

    def remove_sampling_after_fully_shard():
        model = build("sampling")
        shard(model)
        lt.remove_sampling(model)

    results["refuse_activation"] = refusal(activation_with_its_linear_sharded_alone)
    results["refuse_remove_sampling"] = refusal(remove_sampling_after_fully_shard)
    results["refuse_remove_lean"] = refusal(remove_lean_after_fully_shard)
    return results


@pytest.fixture(scope="module")
def results():
    return run_distributed(worker)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_part_under_fsdp2_equals_ddp(results, variant):
    for rank_results in results:
        assert rank_results[variant] < 1e-5


def test_lean_lm_loss_with_lm_head_its_own_unit_equals_the_stock_model(results):
    for rank_results in results:
        assert rank_results["lm_loss_vs_stock"] < 1e-5


def test_activation_companion_refuses_a_linear_sharded_on_its_own(results):
    for rank_results in results:
        assert "sharded here" in rank_results["refuse_activation"]
        assert "LeanConfig(activations=False)" in rank_results["refuse_activation"]


def test_remove_lean_refuses_after_fully_shard(results):
    for rank_results in results:
        assert "call remove_lean before fully_shard" in rank_results["refuse_remove_lean"]


def test_remove_sampling_refuses_after_fully_shard(results):
    for rank_results in results:
        assert "call remove_sampling before fully_shard" in rank_results["refuse_remove_sampling"]
