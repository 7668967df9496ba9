"""The composition matrix, one process: {full, LoRA} × {no sampling, "paper", "all-linear"} × {no layer
checkpointing, "layers"} × {lean off, on} × {every optimizer, Adafactor included, with 32- and 8-bit states}
× {fp32, bf16 autocast, bf16 trained weights}, on a tiny Llama (no dropout anywhere, so every difference
comes from the parts); and the optimizer step in backward in every fp32 and bf16-weights cell.

Each cell, against its reference (the same model without sampling and lean, under the same
precision): the loss is the same; every gradient the parts compute exactly is the same (all of
them without sampling; with it, all but the sampled layers' weights — their inputs' gradients are
exact, so everything upstream is); the sampled weights get a gradient of the right shape; the
optimizer's low-rank group holds exactly the reference's matrices, by name; one update runs and
leaves finite weights. The unbiasedness of the sampled gradients is tested in
test_sampling_statistics.py; several processes in test_composition_processes.py.
"""

import itertools

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import leantrain as lt
from leantrain.names import LOW_RANK_OPTIMIZERS, OPTIMIZERS, STATE_BITS
from leantrain.optim import build_optimizer
from leantrain.optim.in_backward import StepInBackward
from leantrain.optim.sixteen_bit import bf16_weights_

MODES = ("full", "lora")
SAMPLING = (None, "paper", "all-linear")
PRECISIONS = ("fp32", "bf16", "bf16-weights")  # bf16 autocast; weights stored in bf16 (optim/sixteen_bit.py)
# relative, per tensor; bf16: stock bf16 vs fp32 differs by ~1%; bf16 weights: the same model in bf16 both sides
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2, "bf16-weights": 3e-2}


def rank_of(optimizer: str) -> int | None:
    return 4 if optimizer in LOW_RANK_OPTIMIZERS else None


def tiny(mode: str, precision: str = "fp32") -> torch.nn.Module:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager",
                                         use_cache=False))
    if mode == "lora":
        lt.apply_lora(model, rank=4, dropout=0.0)
        for name, parameter in model.named_parameters():  # B starts at zero: make A's gradient non-zero
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.1)
    return bf16_weights_(model) if precision == "bf16-weights" else model


def grads(model, ids, precision):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


def low_rank_names(model, optimizer) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for group in optimizer.param_groups if "rank" in group for p in group["params"]}


CELLS = list(itertools.product(MODES, SAMPLING, (None, "layers"), (False, True), PRECISIONS))


def converted(mode, targets, checkpointing, lean, precision="fp32"):
    model = tiny(mode, precision)
    sampled = {} if targets is None else lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, seed=0), targets)
    if checkpointing:
        lt.apply_checkpointing(model, checkpointing)
    if lean:
        lt.apply_lean(model)
    return model, sampled


@pytest.mark.parametrize(("mode", "targets", "checkpointing", "lean", "precision"), CELLS,
                         ids=[f"{m}-{t or 'exact'}-{c or 'nockpt'}-{'lean' if lean else 'stock'}-{p}"
                              for m, t, c, lean, p in CELLS])
def test_cell_agrees_with_its_reference(mode, targets, checkpointing, lean, precision):
    ids = torch.randint(64, (4, 16), generator=torch.Generator().manual_seed(1))
    reference = tiny(mode, precision)
    ref_loss, ref_grads = grads(reference, ids, precision)
    model, sampled = converted(mode, targets, checkpointing, lean, precision)
    loss, got = grads(model, ids, precision)
    tolerance = TOLERANCE[precision]
    assert torch.allclose(loss, ref_loss, rtol=tolerance), (loss, ref_loss)
    assert got.keys() == ref_grads.keys()
    sampled_weights = {f"{name}.weight" for name in sampled}
    assert sampled_weights <= got.keys()
    if sampled_weights:  # the sampled estimate is not the exact gradient: the cell really samples
        assert any(not torch.allclose(got[name], ref_grads[name], rtol=tolerance) for name in sampled_weights)
    for name, grad in got.items():
        assert grad.shape == ref_grads[name].shape, name
        if name in sampled_weights:
            continue
        error = (grad - ref_grads[name]).norm() / ref_grads[name].norm().clamp_min(1e-12)
        assert error <= tolerance, (name, float(error))
    for optimizer_name, bits in itertools.product(OPTIMIZERS, STATE_BITS):
        if (optimizer_name in ("sgd", "adafactor") and bits == 8) or (optimizer_name == "sgd" and
                                                                       precision == "bf16-weights"):
            continue  # no Adam moments to quantise; bf16 weights need an update computed in fp32
        optimizer = build_optimizer(optimizer_name, model, lr=1e-3, rank=rank_of(optimizer_name), state_bits=bits)
        reference_optimizer = build_optimizer(optimizer_name, reference, lr=1e-3, rank=rank_of(optimizer_name))
        assert low_rank_names(model, optimizer) == low_rank_names(reference, reference_optimizer), optimizer_name
        optimizer.step()
        assert all(torch.isfinite(p).all() for p in model.parameters()), optimizer_name


WEIGHT_CELLS = [cell for cell in CELLS if cell[-1] != "bf16"]


@pytest.mark.parametrize(("mode", "targets", "checkpointing", "lean", "precision"), WEIGHT_CELLS,
                         ids=[f"{m}-{t or 'exact'}-{c or 'nockpt'}-{'lean' if lean else 'stock'}-{p}"
                              for m, t, c, lean, p in WEIGHT_CELLS])
@pytest.mark.parametrize("optimizer_name", ["adamw", "galore", "adafactor"])
def test_step_in_backward_equals_the_ordinary_step_in_every_cell(mode, targets, checkpointing, lean, precision,
                                                                 optimizer_name):
    """Sampled rows are drawn per backward, and a bf16 weight's rounding draws per (place, step), so both models
    draw the same ones whatever order they step in: the updates are bit-identical."""
    ids = torch.randint(64, (4, 16), generator=torch.Generator().manual_seed(1))
    results = []
    bits = 32 if optimizer_name == "adafactor" else 8
    for in_backward in (False, True):
        model, _ = converted(mode, targets, checkpointing, lean, precision)
        optimizer = build_optimizer(optimizer_name, model, lr=1e-3, rank=rank_of(optimizer_name), state_bits=bits)
        stepper = StepInBackward(model, optimizer) if in_backward else None
        for _ in range(2):
            model(input_ids=ids, labels=ids).loss.backward()
            if stepper is None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        results.append({name: p.detach().clone() for name, p in model.named_parameters()})
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name
