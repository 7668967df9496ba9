"""measure_memory against a hand count, its report, and the CPU peak subprocess."""

import json

import pytest
import torch
from torch import nn

from leantrain.memory import measure_memory
from leantrain.models.presets import build_model, random_batch
from leantrain.plan.step_spec import StepSpec


def test_one_adamw_step_equals_a_hand_count():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    optimizer = torch.optim.AdamW(model.parameters())
    report = measure_memory(model, torch.randn(4, 16), optimizer, peak=False)
    # Linear0 saves its input x [4,16]; ReLU saves its output [4,32], which Linear2 saves too (one storage).
    assert report.saved.by_name == {"0": 4 * 16 * 4, "1": 4 * 32 * 4}
    assert report.saved.by_type == {"Linear": 4 * 16 * 4, "ReLU": 4 * 32 * 4}
    n_params = 16 * 32 + 32 + 32 * 8 + 8
    assert report.parameter_bytes == report.trainable_parameter_bytes == n_params * 4
    assert report.gradient_bytes == n_params * 4
    assert report.optimizer_state_bytes == 2 * n_params * 4 + 4 * 4  # exp_avg, exp_avg_sq + a float32 step each
    assert report.batch_bytes == 4 * 16 * 4 and report.peak is None


def test_tied_weights_and_frozen_parameters_are_counted_once_and_apart():
    embedding = nn.Embedding(10, 8)
    head = nn.Linear(8, 10, bias=False)
    head.weight = embedding.weight  # tied
    model = nn.Sequential(embedding, nn.Linear(8, 8), head)
    model[1].requires_grad_(False)
    report = measure_memory(model, torch.tensor([[1, 2, 3]]), torch.optim.SGD(model.parameters(), lr=0.1), peak=False)
    assert report.parameter_bytes == (10 * 8 + 8 * 8 + 8) * 4
    assert report.trainable_parameter_bytes == report.gradient_bytes == 10 * 8 * 4
    assert report.optimizer_state_bytes == 0  # plain SGD keeps nothing


def test_hf_model_report_is_json_and_a_table():
    model = build_model("bert-tiny")
    report = measure_memory(model, random_batch(model, 2, 8), None, peak=False)
    assert report.saved.total == sum(report.saved.by_type.values()) == sum(report.saved.by_name.values())
    assert {"Linear", "LayerNorm", "BertSelfAttention"} <= set(report.saved.by_type)
    assert report.optimizer_state_bytes == 0 and report.gradient_bytes == report.trainable_parameter_bytes
    assert json.loads(json.dumps(report.to_dict()))["saved"]["total"] == report.saved.total
    assert "saved for backward" in report.to_table() and "bert.encoder.layer.0" in report.to_table()


def test_bad_input_gets_a_clear_error():
    model = build_model("bert-tiny")
    batch = random_batch(model, 2, 8)
    del batch["labels"]
    with pytest.raises(ValueError, match="labels"):
        measure_memory(model, batch, peak=False)
    with pytest.raises(ValueError, match="batch must be"):
        measure_memory(model, [torch.zeros(2)], peak=False)
    with pytest.raises(ValueError, match="batch_size"):
        StepSpec("bert-tiny", 0, 8)
    with pytest.raises(ValueError, match="optim must be an OptimConfig or None, got 'adam'"):
        StepSpec("bert-tiny", 2, 8, optim="adam")
    with pytest.raises(ValueError, match="HF model folder"):
        build_model("no/such/folder")


def test_cpu_peak_of_a_fresh_subprocess_covers_new_gradients_and_adam_states():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
    report = measure_memory(model, torch.randn(64, 512), torch.optim.AdamW(model.parameters()))
    assert report.peak is not None and report.peak.method.startswith("cpu")
    assert report.peak.resident_bytes > report.parameter_bytes
    # gradients and both Adam moments are new memory the step allocates and keeps
    assert report.peak.step_bytes >= report.gradient_bytes + report.optimizer_state_bytes
