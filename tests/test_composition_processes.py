"""The composition matrix on several processes: every cell of {DDP, FSDP2} × {full, LoRA} ×
{no sampling, "paper"} × {lean off, on} × {AdamW, GaLore, DCT} × {fp32, bf16 autocast}, and of
{DDP, FSDP2} × {full, LoRA} × {no sampling, "paper"} × {AdamW, GaLore, Adafactor} × bf16 trained weights,
trained by the engine in 2 torchrun-like CPU processes, against the same cell in one process at the same
global batch. Adafactor under FSDP2 is refused, with its reason (a row shard lacks the column means).

Without sampling the parts are exact, so the two runs agree update for update (within float
rounding; bf16 within its own rounding). With sampling every process draws its own rows, so only
the first loss (before any sampled update) must agree and training must stay finite; DDP replicas
must stay identical (their rounding draws are alike; FSDP2 shards draw their own, so bf16 trained
weights agree within bf16 rounding). The cells not listed here add no code path: SGD, Fira and FRUGAL share GaLore's
and AdamW's sharding paths (test_fsdp2_optim.py), "all-linear" shares "paper"'s. Checkpoints and
resume on 2 processes (DDP with AdamW, FSDP2 with GaLore): test_engine_processes.py.
"""

import itertools

import pytest
import torch
from distributed import launch
from transformers import LlamaConfig, LlamaForCausalLM

import leantrain as lt
from leantrain.config import EngineConfig, OptimConfig
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.names import LOW_RANK_OPTIMIZERS

CELLS = list(itertools.product(("ddp", "fsdp2"), ("full", "lora"), (None, "paper"), (False, True),
                               ("adamw", "galore", "dct"), ("fp32", "bf16")))
CELLS += list(itertools.product(("ddp", "fsdp2"), ("full", "lora"), (None, "paper"), (False,),
                                ("adamw", "galore", "adafactor"), ("bf16-weights",)))
UPDATES = 3
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2, "bf16-weights": 3e-2}


def rank_of(optimizer: str) -> int | None:
    return 4 if optimizer in LOW_RANK_OPTIMIZERS else None


def tiny(mode: str, targets: str | None, lean: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                         attn_implementation="eager", use_cache=False))
    if mode == "lora":
        lt.apply_lora(model, rank=4)
    if targets is not None:
        lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, seed=0), targets)
    if lean:
        lt.apply_lean(model)
    return model


def batch(update: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(64, (4, 16), generator=torch.Generator().manual_seed(update))
    return {"input_ids": ids, "labels": ids}


def run_cell(layout, mode, targets, lean, optimizer, precision) -> dict:
    model = tiny(mode, targets, lean)
    losses = []
    engine = Engine(on_record=lambda r: losses.append(r["loss"]) if "loss" in r else None, show_progress=False)
    weights = "bf16" if precision == "bf16-weights" else "fp32"
    task = TrainTask(model=model, batch=batch,
                     optim=OptimConfig(optimizer, lr=1e-2, rank=rank_of(optimizer), weights=weights))
    try:
        engine.run(task, EngineConfig(precision="fp32" if weights == "bf16" else precision, layout=layout),
                   RunPlan(UPDATES))
    except ValueError as refusal:
        return {"refused": str(refusal)}
    state = {name: value.float().clone() for name, value in engine.full_state_dict().items()}
    return {"losses": losses, "state": state}


def run_every_cell() -> dict:
    return {cell: run_cell(*cell) for cell in CELLS}


@pytest.fixture(scope="module")
def two_processes():
    return launch(run_every_cell)


@pytest.mark.parametrize("cell", CELLS, ids=["-".join(str(x or "exact") for x in cell) for cell in CELLS])
def test_cell_on_two_processes_agrees_with_one_process(two_processes, cell):
    layout, mode, targets, lean, optimizer, precision = cell
    two, other_rank = two_processes[0][cell], two_processes[1][cell]
    if layout == "fsdp2" and optimizer == "adafactor":
        assert "whole columns" in two["refused"] and "layout='ddp'" in two["refused"], two
        return
    one = run_cell("ddp", mode, targets, lean, optimizer, precision)
    tolerance = TOLERANCE[precision]
    assert len(two["losses"]) == UPDATES and all(torch.isfinite(torch.tensor(two["losses"])))
    compared = two["losses"] if targets is None else two["losses"][:1]
    reference = one["losses"][:len(compared)]
    assert all(abs(a - b) <= tolerance * abs(b) for a, b in zip(compared, reference, strict=True)), compared
    for name, value in two["state"].items():
        assert torch.isfinite(value).all(), name
        if targets is None and precision == "fp32":
            error = (value - one["state"][name]).norm() / one["state"][name].norm().clamp_min(1e-12)
            assert error <= 1e-4, (name, float(error))
        if layout == "ddp":
            assert torch.equal(value, other_rank["state"][name]), name  # replicas stay identical
