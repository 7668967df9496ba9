"""StepInBackward (LOMO's fused update, arXiv 2306.09782): bit for bit the updates of backward, step, zero_grad
for torch's and leantrain's optimizers, with at most one parameter's gradient alive; the engine's
step_in_backward, its resume, its logged gradient norm and its refusals."""

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from tiny_lm import seeded_batch, tiny_llama
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from leantrain.config import EngineConfig, OptimConfig
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.models.presets import build_model, random_batch
from leantrain.names import MODEL_PRESETS
from leantrain.optim.factory import build_optimizer
from leantrain.optim.in_backward import StepInBackward

STEPS = 3
OPTIMIZERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "adamw-single-tensor": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1, foreach=False),
    "adamw-default": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
    "adamw-foreach": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1, foreach=True),
    "sgd-momentum": lambda m: torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9),
    "galore": lambda m: build_optimizer("galore", m, lr=1e-2, rank=4, update_proj_gap=2, weight_decay=0.1),
    "dct": lambda m: build_optimizer("dct", m, lr=1e-2, rank=4),
}


def tied_llama() -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(**MODEL_PRESETS["llama-tiny"][1], tie_word_embeddings=True, use_cache=False)
    return LlamaForCausalLM(config)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, fused: bool) -> list[float]:
    """STEPS updates, fused into backward or ordinary; returns the gradient norms."""
    norms = []
    stepper = StepInBackward(model, optimizer) if fused else None
    for step in range(STEPS):
        model(**random_batch(model, 2, 8, seed=step)).loss.backward()
        if fused:
            assert all(p.grad is None for p in model.parameters())  # every gradient stepped and freed
            norms.append(float(stepper.grad_norm()))
        else:
            norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return norms


def assert_identical(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    else:
        assert a == b


def run_both(build: Callable[[], nn.Module], make: Callable[[nn.Module], torch.optim.Optimizer]):
    runs = []
    for fused in (False, True):
        model = build()
        optimizer = make(model)
        runs.append((model, optimizer, train(model, optimizer, fused)))
    return runs


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_updates_equal_the_ordinary_step_bit_for_bit(name):
    (plain, plain_opt, plain_norms), (fused, fused_opt, fused_norms) = run_both(
        lambda: build_model("llama-tiny"), OPTIMIZERS[name])
    assert_identical(plain.state_dict(), fused.state_dict())
    assert_identical(plain_opt.state_dict(), fused_opt.state_dict())
    assert plain_norms == fused_norms


def test_a_tied_weight_is_stepped_once_per_backward_with_one_gradient_alive():
    model = tied_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    optimizer = OPTIMIZERS["adamw-default"](model)
    parameters = list(model.parameters())
    largest = max(p.numel() * p.element_size() for p in parameters)
    stepped, live_bytes = [], []

    def observe(optimizer, args, kwargs) -> None:  # runs inside each hook's optimizer.step()
        with_grad = [p for p in parameters if p.grad is not None]
        stepped.extend(id(p) for p in with_grad)
        live_bytes.append(sum(p.grad.numel() * p.grad.element_size() for p in with_grad))

    optimizer.register_step_pre_hook(observe)
    with StepInBackward(model, optimizer):
        model(**random_batch(model, 2, 8)).loss.backward()
    assert sorted(stepped) == sorted(id(p) for p in parameters)  # each once, the tied weight included
    assert max(live_bytes) <= largest < sum(p.numel() * p.element_size() for p in parameters)
    model(**random_batch(model, 2, 8)).loss.backward()  # hooks removed: the gradients stay
    assert all(p.grad is not None for p in parameters)

    (plain, _, plain_norms), (fused, _, fused_norms) = run_both(tied_llama, OPTIMIZERS["adamw-default"])
    assert_identical(plain.state_dict(), fused.state_dict())
    assert plain_norms == fused_norms


def test_registration_refuses_what_it_cannot_step_exactly():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"does not hold 1\.weight, 1\.bias"):
        StepInBackward(model, torch.optim.SGD(model[0].parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"holds 2 trainable parameter\(s\) that the model does not"):
        StepInBackward(model[0], torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(1, 4)).sum().backward()
    with pytest.raises(ValueError, match=r"0\.weight, 0\.bias, 1\.weight, 1\.bias already hold a gradient"):
        StepInBackward(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_the_engine_turns_clipping_off_with_step_in_backward(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"step_in_backward='yes' must be True or False"):
        OptimConfig(step_in_backward="yes")
    _, _, clipped_model = engine_run(None, fused=True, max_steps=2, grad_clip=1e-3, verbose=True)
    assert "global-norm clipping is off (the norm is still logged)" in capsys.readouterr().out
    _, _, unclipped_model = engine_run(None, fused=True, max_steps=2)
    assert_identical(clipped_model, unclipped_model)  # no clipping happened


def test_accumulation_in_backward_equals_the_ordinary_accumulation_within_bf16_rounding():
    """Two micro-batches a step: the fused run keeps the first one's gradient in a bf16 buffer (rounded once,
    relative error at most 2^-9 of it) and steps on the sum in the second backward. With SGD the update is the
    gradient itself, so each update's error is bounded by lr · 2^-9 · |first micro-batch's gradient|."""
    sgd = OptimConfig("sgd", lr=0.1)
    start = tiny().state_dict()
    _, plain_logged, plain_model = engine_run(None, fused=False, max_steps=1, optim=sgd, grad_accum=2)
    _, fused_logged, fused_model = engine_run(None, fused=True, max_steps=1, optim=sgd, grad_accum=2)
    first = tiny()
    first(**{k: v[:1] for k, v in batch(0).items()}).loss.backward()  # the first micro-batch's gradient
    gradients = dict(first.named_parameters())
    for name, value in plain_model.items():
        bound = 0.1 * 2**-9 * gradients[name].grad.abs() + 1e-7
        assert ((fused_model[name] - start[name]) - (value - start[name])).abs().le(bound).all(), name
    plain, fused = ([r for r in logged if "loss" in r] for logged in (plain_logged, fused_logged))
    assert plain[0]["loss"] == fused[0]["loss"] and plain[0]["grad_norm"] == pytest.approx(fused[0]["grad_norm"],
                                                                                            rel=2**-8)


tiny, batch = tiny_llama, seeded_batch
DCT = OptimConfig("dct", lr=1e-2, rank=4, weight_decay=0.1)


def task(fused: bool = False, optim: OptimConfig = DCT) -> TrainTask:
    return TrainTask(model=tiny(), batch=batch, optim=replace(optim, step_in_backward=fused),
                     build_schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step)),
                     evaluate=lambda engine: {"val_loss": float(engine.model(**batch(99)).loss)})


def engine_run(run_dir, fused: bool, max_steps: int, resume: bool = False, grad_clip: float | None = None,
               verbose: bool = False, optim: OptimConfig | None = None, grad_accum: int = 1):
    logged = []
    run_task = task(fused) if optim is None else task(fused, optim)
    engine = Engine(run_dir, on_record=logged.append, show_progress=verbose)
    result = engine.run(run_task, EngineConfig(grad_clip=grad_clip, grad_accum=grad_accum),
                        RunPlan(max_steps, eval_every=2), resume=resume)
    return result, logged, run_task.model.state_dict()


@pytest.mark.parametrize("optim", [None, OptimConfig("adafactor", lr=1e-2, weights="bf16", compensation=True),
                                   OptimConfig("adamw", lr=1e-2, weights="bf16", state_bits=8)],
                         ids=["dct-fp32", "adafactor-bf16-kahan", "adamw8bit-bf16"])
def test_the_engine_fused_run_and_its_resume_equal_the_ordinary_run(tmp_path, optim):
    """bf16 weights too: the engine stores them in bf16, and their rounding draws follow each parameter's place
    and step, so the fused run, the ordinary one and a resume agree bit for bit."""
    plain, plain_logged, plain_model = engine_run(None, fused=False, max_steps=4, optim=optim)
    fused, fused_logged, fused_model = engine_run(None, fused=True, max_steps=4, optim=optim)
    assert [r["step"] for r in plain_logged if "grad_norm" in r] == [1, 2, 3, 4]
    assert fused_logged == plain_logged  # loss, lr, grad_norm and the evaluations
    assert fused.records == plain.records
    assert_identical(fused_model, plain_model)

    if optim is not None:
        assert all(value.dtype == torch.bfloat16 for value in fused_model.values() if value.is_floating_point())
    engine_run(tmp_path, fused=True, max_steps=2, optim=optim)
    resumed, resumed_logged, resumed_model = engine_run(tmp_path, fused=True, max_steps=4, resume=True, optim=optim)
    assert resumed_logged == [r for r in plain_logged if r["step"] > 2]
    assert resumed.records == plain.records
    assert_identical(resumed_model, plain_model)


def test_the_engine_refuses_step_in_backward_under_fsdp2():
    engine = Engine(show_progress=False)
    engine.world_size = 2  # as under torchrun: refused before anything collective runs
    with pytest.raises(ValueError, match=r"runs under DDP or in one process, not under FSDP2 on 2 processes"):
        engine.run(task(fused=True), EngineConfig(layout="fsdp2"), RunPlan(1))
