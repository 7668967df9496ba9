"""Layer checkpointing (lean/checkpointing.py): exact gradients, less saved, WTA-CRS and the lean companions
working inside the rerun (the same rows drawn, the rerun's peak smaller), undone by remove_lean, errors."""

import copy

import pytest
import torch

import leantrain as lt
from leantrain.lean.recompute import RecomputedModule
from leantrain.memory import saved_tensor_bytes
from leantrain.models.presets import build_model, random_batch


def step(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, rtol=1e-5):
    assert torch.allclose(a[0], b[0], rtol=rtol)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=rtol, atol=1e-7, msg=name)


@pytest.mark.parametrize("name", ["llama-tiny", "bert-tiny"])
@pytest.mark.parametrize("policy", ["layers", "selective"])
def test_checkpointed_layers_give_the_stock_gradients_and_save_less(name, policy):
    model = build_model(name).eval()  # no dropout: the comparison is of the parts alone
    batch = random_batch(model, 2, 16)
    checkpointed = copy.deepcopy(model)
    changed = lt.apply_checkpointing(checkpointed, policy)
    assert changed and all(isinstance(checkpointed.get_submodule(n), RecomputedModule) for n in changed)
    assert_same(step(model, batch), step(checkpointed, batch))
    assert saved_tensor_bytes(checkpointed, batch).total < saved_tensor_bytes(model, batch).total / 2


def test_sampled_layers_draw_the_same_rows_in_the_rerun():
    """WTA-CRS inside a checkpointed layer: the rerun before backward draws the rows of the forward, so the
    gradients equal those of the same sampled model without checkpointing (an independent redraw would not)."""
    model = build_model("llama-tiny").eval()
    batch = random_batch(model, 4, 16)
    sampled = copy.deepcopy(model)
    lt.apply_sampling(sampled, lt.SamplingConfig("wtacrs", 0.3, seed=0))
    checkpointed = copy.deepcopy(sampled)
    lt.apply_checkpointing(checkpointed)
    assert_same(step(sampled, batch), step(checkpointed, batch))
    redrawn = copy.deepcopy(model)
    lt.apply_sampling(redrawn, lt.SamplingConfig("wtacrs", 0.3, seed=1))
    assert not torch.allclose(step(redrawn, batch)[1]["model.layers.0.mlp.down_proj.weight"],
                              step(sampled, batch)[1]["model.layers.0.mlp.down_proj.weight"])


def test_lean_inside_checkpointed_layers_is_exact_and_leaves_the_rerun_to_the_layer():
    model = build_model("llama-tiny").eval()
    batch = random_batch(model, 2, 16)
    both = copy.deepcopy(model)
    converted = lt.prepare(both, checkpointing="layers", lean=True)
    wrapped = [name for name, module in both.named_modules() if isinstance(module, RecomputedModule)]
    inner = [name for name in wrapped if name not in converted["checkpointing"]]
    assert inner == []  # the MLP and attention blocks are not wrapped again inside the rerun
    assert "model.layers.0.input_layernorm" in converted["lean"]
    assert_same(step(model, batch), step(both, batch))


def test_the_rerun_of_a_layer_keeps_what_its_parts_keep():
    """The recompute peak is one layer's saved activations: with WTA-CRS + lean inside, that is less."""
    model = build_model("llama-small").eval()
    batch = random_batch(model, 2, 64)
    stock = saved_tensor_bytes(model, batch).by_name
    lean = copy.deepcopy(model)
    lt.apply_sampling(lean, lt.SamplingConfig("wtacrs", 0.3, seed=0))
    lt.apply_lean(lean)
    leaner = saved_tensor_bytes(lean, batch).by_name

    def layer_bytes(by_name):
        return sum(size for name, size in by_name.items() if name.startswith("model.layers.0."))

    assert layer_bytes(leaner) < 0.6 * layer_bytes(stock)


def test_remove_lean_undoes_it_and_bad_input_is_refused():
    model = build_model("llama-tiny")
    before = dict(model.named_parameters())
    lt.apply_checkpointing(model)
    restored = lt.remove_lean(model)
    assert "model.layers.0" in restored and not any(isinstance(m, RecomputedModule) for m in model.modules())
    assert dict(model.named_parameters()) == before
    with pytest.raises(ValueError, match=r"policy='all' is not one of \('layers', 'selective'\)"):
        lt.apply_checkpointing(model, "all")
    with pytest.raises(ValueError, match="Sequential has no transformer layers"):
        lt.apply_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2)))
