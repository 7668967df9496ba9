"""saved_tensor_bytes against a hand count."""

import torch
from torch import nn

import leantrain as lt
from leantrain.memory import saved_tensor_bytes


def test_counts_each_saved_activation_once_and_excludes_parameters():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(4, 16)  # no grad: the first Linear keeps nothing for dX, only x for dW
    report = saved_tensor_bytes(model, x)
    # Linear0 saves x [4,16]; ReLU saves its output [4,32]; Linear2 saves that same output (one storage).
    assert report.by_name == {"0": 4 * 16 * 4, "1": 4 * 32 * 4}
    assert report.by_type == {"Linear": 4 * 16 * 4, "ReLU": 4 * 32 * 4}
    assert report.total == 4 * 16 * 4 + 4 * 32 * 4


def test_an_input_another_op_already_saved_costs_the_linear_nothing():
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64))  # Tanh saves its output
    report = saved_tensor_bytes(model, torch.randn(8, 64))
    assert "2" not in report.by_name and report.by_name["1"] == 8 * 64 * 4


def test_sampled_layers_keep_about_budget_times_their_input():
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64))  # GELU saves its input
    x = torch.randn(8, 32, 64)
    exact = saved_tensor_bytes(model, x).by_name["2"]
    lt.apply_sampling(model, lt.SamplingConfig("crs", 0.25, seed=0), targets=["2"])
    sampled = saved_tensor_bytes(model, x).by_name["2"]
    k = int(0.25 * 8 * 32)
    assert sampled <= 0.25 * exact + k * 8  # kept rows + int32 index + float32 weight per row
