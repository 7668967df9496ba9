"""SampledLinear against nn.Linear: what is exact, what is kept for backward, and bad input."""

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import leantrain as lt

METHODS = ["exact", "crs", "topk", "wtacrs"]


def converted_pair(method="wtacrs", budget=0.3, bias=True, dtype=torch.float32, module=nn.Linear, **cfg):
    torch.manual_seed(0)
    reference = module(16, 8, bias=bias) if module is nn.Linear else module(8, 16)
    sampled = module(16, 8, bias=bias) if module is nn.Linear else module(8, 16)
    sampled.load_state_dict(reference.state_dict())
    reference, sampled = reference.to(dtype), nn.Sequential(sampled.to(dtype))
    lt.apply_sampling(sampled, lt.SamplingConfig(method, budget, **{"seed": 0, **cfg}), targets=["0"])
    return reference, sampled


def grads(module, x, grad_out):
    x = x.detach().clone().requires_grad_()
    out = module(x)
    out.backward(grad_out)
    params = dict(module.named_parameters())
    weight = next(p for n, p in params.items() if n.endswith("weight"))
    bias = next((p for n, p in params.items() if n.endswith("bias")), None)
    return out, x.grad, weight.grad, None if bias is None else bias.grad


@pytest.mark.parametrize("module", [nn.Linear, Conv1D])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", METHODS)
def test_full_budget_is_bit_identical_to_the_stock_layer(method, dtype, module):
    reference, sampled = converted_pair(method, budget=1.0, dtype=dtype, module=module)
    x = torch.randn(4, 6, 16, dtype=dtype)
    grad_out = torch.randn(4, 6, 8, dtype=dtype)
    for got, want in zip(grads(sampled, x, grad_out), grads(reference, x, grad_out), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("shape", [(4, 6, 16), (40, 16), (2, 3, 5, 16)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("method", ["crs", "topk", "wtacrs"])
def test_output_input_grad_and_bias_grad_stay_bit_identical_when_sampling(method, bias, shape):
    reference, sampled = converted_pair(method, budget=0.2, bias=bias)
    x, grad_out = torch.randn(shape), torch.randn(*shape[:-1], 8)
    (out, dx, dw, db), (ref_out, ref_dx, ref_dw, ref_db) = grads(sampled, x, grad_out), grads(reference, x, grad_out)
    assert torch.equal(out, ref_out) and torch.equal(dx, ref_dx)
    assert db is None or torch.equal(db, ref_db)
    assert dw.shape == ref_dw.shape and not torch.equal(dw, ref_dw)  # dW really is sampled


def saved_tensors(fn):
    kept = []

    def pack(t):
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return kept


def activation_bytes(kept, params):
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}
    return sum(n for ptr, n in storages.items() if ptr not in param_storages)


@pytest.mark.parametrize("method", ["crs", "topk", "wtacrs"])
def test_saves_about_budget_times_the_input_through_save_for_backward(method):
    _, sampled = converted_pair(method, budget=0.25)
    x = torch.randn(8, 64, 16, requires_grad=True)
    kept = saved_tensors(lambda: sampled(x))
    saved = activation_bytes(kept, sampled.parameters())
    full = x.numel() * 4
    k = int(0.25 * 8 * 64)
    index_overhead = k * (4 + 4)  # int32 index + float32 weight per kept row
    assert saved <= 0.25 * full + index_overhead
    assert saved >= 0.05 * full  # rows really are kept (wtacrs merges duplicate draws)


def test_frozen_weight_keeps_nothing_for_the_weight_gradient():
    _, sampled = converted_pair("wtacrs", budget=0.3)
    sampled[0].weight.requires_grad_(False)
    x = torch.randn(4, 6, 16, requires_grad=True)
    assert activation_bytes(saved_tensors(lambda: sampled(x)), sampled.parameters()) == 0


def test_eval_mode_and_no_grad_behave_exactly_like_the_stock_layer():
    reference, sampled = converted_pair("wtacrs", budget=0.1)
    x = torch.randn(4, 6, 16, requires_grad=True)
    sampled.eval()
    assert torch.equal(sampled(x), reference(x))
    sampled.train()
    with torch.no_grad():
        assert torch.equal(sampled(x), reference(x))
        assert saved_tensors(lambda: sampled(x)) == []


def test_autocast_matches_stock_dtype_handling():
    reference, sampled = converted_pair("wtacrs", budget=0.3)
    x = torch.randn(4, 6, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = sampled(x), reference(x)
    assert out.dtype == ref.dtype == torch.bfloat16 and torch.equal(out, ref)
    out.float().sum().backward()
    assert sampled[0].weight.grad.dtype == torch.float32


def test_seeded_runs_reproduce_and_different_seeds_differ():
    def weight_grad(seed):
        _, sampled = converted_pair("wtacrs", budget=0.2, seed=seed)
        x = torch.randn(8, 16, 16, generator=torch.Generator().manual_seed(5))
        sampled(x).sum().backward()
        return sampled[0].weight.grad

    assert torch.equal(weight_grad(3), weight_grad(3))
    assert not torch.equal(weight_grad(3), weight_grad(4))


def test_a_draw_is_seeded_by_backward_passes_so_a_rerun_before_backward_draws_the_same_rows():
    _, sampled = converted_pair("wtacrs", budget=0.2, importance="norm")
    x = torch.randn(8, 16, 16, generator=torch.Generator().manual_seed(5))
    sampler = sampled[0].sampler
    first, rerun = sampler.draw(x), sampler.draw(x)  # as activation recompute reruns a forward
    assert torch.equal(first.indices, rerun.indices) and torch.equal(first.weights, rerun.weights)
    sampled(x).sum().backward()
    after_backward = sampler.draw(x)
    assert sampler.backward_passes == 1
    assert not torch.equal(after_backward.indices, first.indices)


@pytest.mark.parametrize(
    ("field", "value"),
    [("budget", 0.0), ("budget", 1.5), ("budget", float("nan")), ("budget", True), ("method", "random"),
     ("importance", "oracle"), ("minimal_k", 0), ("seed", 1.5)],
)
def test_bad_config_names_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        lt.SamplingConfig(**{field: value})


def test_bad_targets_are_reported():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="'attention-only' is not a preset"):
        lt.apply_sampling(model, lt.SamplingConfig(), targets="attention-only")
    with pytest.raises(ValueError, match="matched no linear layer"):
        lt.apply_sampling(model, lt.SamplingConfig(), targets=["q_proj"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        lt.apply_sampling(model, lt.SamplingConfig(), targets=["(unclosed"])


def test_integer_and_non_finite_inputs_are_reported():
    _, sampled = converted_pair("wtacrs", budget=0.2)
    with pytest.raises(ValueError, match=r"torch\.int64 is not a floating-point"):
        sampled(torch.ones(4, 16, dtype=torch.long))
    x = torch.randn(40, 16)
    x[3, 2] = float("nan")
    x[7, 0] = float("inf")
    with pytest.raises(RuntimeError, match="sampled layer 0: an input row holds NaN or inf"):
        sampled(x.requires_grad_())


def test_cached_importance_needs_sample_ids():
    _, sampled = converted_pair("wtacrs", budget=0.2, importance="cached")
    x = torch.randn(4, 16, 16)
    with pytest.raises(ValueError, match="needs sample ids"):
        sampled(x)
    with pytest.raises(ValueError, match="got 3 ids for a batch of 4"), lt.sample_ids(sampled, [0, 1, 2]):
        sampled(x)
    with pytest.raises(ValueError, match="1-D sequence of integers"), lt.sample_ids(sampled, [0.5, 1.0]):
        pass


def test_exact_gradients_block_gives_the_stock_gradient_then_sampling_resumes():
    reference, sampled = converted_pair("wtacrs", budget=0.2)
    x, grad_out = torch.randn(8, 16, 16), torch.randn(8, 16, 8)
    with lt.exact_gradients(sampled):
        exact = grads(sampled, x, grad_out)
    for got, want in zip(exact, grads(reference, x, grad_out), strict=True):
        assert torch.equal(got, want)
    sampled.zero_grad()
    assert not torch.equal(grads(sampled, x, grad_out)[2], exact[2])
