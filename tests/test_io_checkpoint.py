"""Atomic safetensors checkpoints of nested training state, and the resumable metrics writer."""

import random

import pytest
import torch

from leantrain.io import MetricsWriter, load_checkpoint, read_metrics, save_checkpoint


def test_checkpoint_round_trips_nested_state_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight  # tied, as in small LMs
    model = torch.nn.ModuleDict({"embed": embedding, "head": head})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model["head"](model["embed"](torch.tensor([1, 2]))).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
             "python_rng": random.getstate(), "step": 7, "note": None}
    path = save_checkpoint(tmp_path / "ck" / "checkpoint.safetensors", state)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.safetensors"]  # no temp file left

    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["note"] is None and loaded["python_rng"] == state["python_rng"]
    assert torch.equal(loaded["rng"], state["rng"])
    assert list(loaded["optimizer"]["state"]) == [0]  # integer keys survive
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    restored = torch.optim.AdamW(model.parameters(), lr=1e-3)
    restored.load_state_dict(loaded["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)


def test_checkpoint_rejects_unknown_types(tmp_path):
    with pytest.raises(TypeError, match="'config/when'"):
        save_checkpoint(tmp_path / "c.safetensors", {"config": {"when": object()}})


def test_metrics_writer_drops_records_after_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as metrics:
        for step in range(1, 6):
            metrics.write({"step": step, "loss": 1.0 / step})
    with MetricsWriter(path, resume_step=3) as metrics:
        metrics.write({"step": 4, "loss": 0.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.0)]
    MetricsWriter(path).close()  # a fresh run starts an empty file
    assert read_metrics(path) == []
