"""torch.compile of sampled (WTA-CRS) and lean models: one training step equals the eager model's.

Sampled layers draw their rows from generators seeded by (seed, layer, rank, backward passes) —
Python state, so a compiled model draws the same rows as an eager one built the same way. Dynamo
cannot trace a seeded ``torch.Generator`` (made and seeded per draw, then passed to ``torch.multinomial``):
it breaks the graph there and runs the draw eagerly; the rest of the sampler (no host reads, fixed-size
samples) is traced. The Llama lean companions
compile without a break of their own; BERT's lean dropout breaks at each mask's seeded generator.
The tests assert what leantrain owns: the functions of leantrain in which a graph breaks (listed in
docs/memory.md, "torch.compile"), not the total count, which moves with upstream releases (HF's
kernel routing in transformers 5.2x breaks inside every ``torch.utils.checkpoint``).
The ``aot_eager`` backend traces forward and backward as inductor does (dynamo + AOTAutograd)
without generating kernels, which keeps this file fast on CPU; one test compiles the lean Llama with
inductor itself.
"""

from pathlib import Path

import pytest
import torch

import leantrain as lt
from leantrain.models.presets import build_model, random_batch

PACKAGE = Path(lt.__file__).parent
# leantrain's functions in which one step's graph breaks (why: docs/memory.md, "torch.compile"): the sampled
# layers' draw, and BERT's lean dropout masks
SAMPLER_BREAKS = {("sampling/function.py", "forward")}
CASES = {
    ("llama-tiny", "sampling"): SAMPLER_BREAKS,
    ("llama-tiny", "lean"): set(),
    ("bert-tiny", "sampling+lean"): SAMPLER_BREAKS | {("lean/dropout.py", "dropout_mask")},
}


def build(name: str, conversions: str) -> torch.nn.Module:
    model = build_model(name, seed=0)
    if "sampling" in conversions:
        lt.apply_sampling(model, lt.SamplingConfig.from_spec("wtacrs@0.3", seed=0))
    if "lean" in conversions:
        lt.apply_lean(model)
    return model


def train_step(model: torch.nn.Module, run, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # lean dropout and attention draw their seeds from the global generator
    loss = run(**batch).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def leantrain_breaks(model: torch.nn.Module, batch: dict) -> set[tuple[str, str]]:
    """(file in the package, function) of each graph break whose innermost frame is leantrain's code."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(**batch)
    frames = [reason.user_stack[-1] for reason in explained.break_reasons if reason.user_stack]
    return {(Path(f.filename).relative_to(PACKAGE).as_posix(), f.name) for f in frames
            if Path(f.filename).is_relative_to(PACKAGE)}


@pytest.mark.parametrize(("name", "conversions"), list(CASES))
def test_compiled_step_equals_eager_step_and_breaks_in_leantrain_are_known(name, conversions):
    eager = build(name, conversions)
    batch = random_batch(eager, 4, 16, seed=0)
    eager_loss, eager_grads = train_step(eager, eager, batch)

    model = build(name, conversions)
    torch._dynamo.reset()
    loss, grads = train_step(model, torch.compile(model, backend="aot_eager"), batch)

    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert [n for n in grads if (grads[n] is None) != (eager_grads[n] is None)] == []
    for n, grad in grads.items():
        if grad is not None:
            torch.testing.assert_close(grad, eager_grads[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    if "sampling" in conversions:  # the rows drawn were the eager model's: same draw count, same seeds next step
        counts = {layer.sampler.backward_passes for layer in lt.sampled_layers(model).values()}
        assert counts == {layer.sampler.backward_passes for layer in lt.sampled_layers(eager).values()} == {1}
    assert leantrain_breaks(build(name, conversions), batch) == CASES[name, conversions]


def test_inductor_compiles_the_lean_llama_to_the_eager_step(monkeypatch):
    """The lean Llama is one graph: inductor (C++ kernels on CPU) compiles its forward and backward, and the
    step equals the eager one within float rounding (fused kernels reorder sums)."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "compile_threads", 1)
    eager = build("llama-tiny", "lean")
    batch = random_batch(eager, 2, 16, seed=0)
    eager_loss, eager_grads = train_step(eager, eager, batch)
    model = build("llama-tiny", "lean")
    torch._dynamo.reset()
    loss, grads = train_step(model, torch.compile(model, backend="inductor"), batch)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-5)
    for n, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[n], rtol=1e-3, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("method", ["crs", "wtacrs", "topk"])
def test_an_unseeded_compiled_sampled_layer_draws_as_eager_and_keeps_its_gradient_unbiased(method):
    """Draws from torch's global generator: three compiled steps equal the eager ones from the same generator state,
    loss and gradients. Traced into the graph, torch 2.13 drew the rows saved for backward a second time (a 90%
    error of the mean gradient over 300 steps, where eager's was 6%); the draw runs eagerly instead."""
    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
        lt.apply_sampling(model, lt.SamplingConfig(method, 0.3, importance="norm", minimal_k=2), targets=["0", "2"])
        return model

    def steps(model, run, x):
        torch.manual_seed(1)
        out = []
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            loss = run(x).square().sum()
            loss.backward()
            out.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
        return out

    x = torch.randn(4, 10, 16, generator=torch.Generator().manual_seed(2))
    eager = build()
    model = build()
    torch._dynamo.reset()
    compiled = steps(model, torch.compile(model, backend="aot_eager"), x)
    for got, expected in zip(compiled, steps(eager, eager, x), strict=True):
        for value, eager_value in zip(got, expected, strict=True):
            torch.testing.assert_close(value, eager_value, rtol=1e-5, atol=1e-5)
