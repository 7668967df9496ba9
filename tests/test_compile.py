"""torch.compile of sampled (WTA-CRS) and lean models: one training step equals the eager model's.

Sampled layers draw their rows from generators seeded by (seed, layer, rank, backward passes) —
Python state, so a compiled model draws the same rows as an eager one built the same way. Dynamo
cannot trace the draw (a seeded ``torch.Generator``, ``Tensor.item()``, a data-dependent
``unique``): it breaks the graph there and runs the sampler eagerly. The Llama lean companions
compile into one graph; BERT's lean dropout breaks it at each mask's seeded generator. The graph
breaks are listed in docs/memory.md, "torch.compile"; the counts here keep new ones from slipping in.
The ``aot_eager`` backend traces forward and backward as inductor does (dynamo + AOTAutograd)
without generating kernels, which keeps this file fast on CPU; one test compiles the lean Llama with
inductor itself.
"""

import pytest
import torch
from torch._dynamo.utils import counters

import leantrain as lt
from leantrain.models.presets import build_model, random_batch

# Graph breaks in one step under torch 2.13 (where they come from: docs/memory.md, "torch.compile").
# Sampling breaks in each sampled layer's draw; BERT's lean dropout in each dropout's seeded mask.
CASES = {
    ("llama-tiny", "sampling"): 48,
    ("llama-tiny", "lean"): 0,
    ("bert-tiny", "sampling+lean"): 46,
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


@pytest.mark.parametrize(("name", "conversions"), list(CASES))
def test_compiled_step_equals_eager_step_and_graph_breaks_are_known(name, conversions):
    eager = build(name, conversions)
    batch = random_batch(eager, 4, 16, seed=0)
    eager_loss, eager_grads = train_step(eager, eager, batch)

    model = build(name, conversions)
    torch._dynamo.reset()
    counters.clear()
    loss, grads = train_step(model, torch.compile(model, backend="aot_eager"), batch)

    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert [n for n in grads if (grads[n] is None) != (eager_grads[n] is None)] == []
    for n, grad in grads.items():
        if grad is not None:
            torch.testing.assert_close(grad, eager_grads[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    if "sampling" in conversions:  # the rows drawn were the eager model's: same draw count, same seeds next step
        counts = {layer.sampler.backward_passes for layer in lt.sampled_layers(model).values()}
        assert counts == {layer.sampler.backward_passes for layer in lt.sampled_layers(eager).values()} == {1}
    breaks = sum(counters["graph_break"].values())
    assert breaks == CASES[name, conversions], dict(counters["graph_break"])


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
