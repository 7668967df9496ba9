"""`leantrain memory` end to end on a tiny model."""

import json

from leantrain.cli import main


def test_json_report_stock_and_lean(capsys):
    assert main(["memory", "llama-tiny", "--batch-size", "2", "--seq-len", "16", "--no-peak", "--json"]) == 0
    stock = json.loads(capsys.readouterr().out)
    assert main(["memory", "llama-tiny", "--batch-size", "2", "--seq-len", "16", "--no-peak", "--json", "--lean"]) == 0
    lean = json.loads(capsys.readouterr().out)
    assert lean["lean"] and lean["saved"]["total"] < stock["saved"]["total"] / 2
    assert lean["parameter_bytes"] == stock["parameter_bytes"] and stock["optimizer_state_bytes"] > 0


def test_table_with_peak(capsys):
    assert main(["memory", "bert-tiny", "--batch-size", "2", "--seq-len", "8", "--optim", "sgd"]) == 0
    out = capsys.readouterr().out
    assert "saved for backward" in out and "cpu peak RSS" in out


def test_bad_model_and_batch_size_exit_2(capsys):
    assert main(["memory", "no/such/folder", "--no-peak"]) == 2
    assert main(["memory", "bert-tiny", "--batch-size", "0", "--no-peak"]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err


def test_sampling_and_lora_flags_shrink_what_the_linear_layers_keep(capsys):
    args = ["memory", "bert-tiny", "--batch-size", "4", "--seq-len", "32", "--no-peak", "--json"]
    assert main(args) == 0
    stock = json.loads(capsys.readouterr().out)
    assert main([*args, "--sampling", "wtacrs@0.25"]) == 0
    sampled = json.loads(capsys.readouterr().out)
    assert sampled["sampling"] == "wtacrs@0.25" and "SampledLinear" in sampled["saved"]["by_type"]
    assert sampled["saved"]["total"] < stock["saved"]["total"]
    assert main([*args, "--lora-rank", "4"]) == 0
    lora = json.loads(capsys.readouterr().out)
    assert lora["trainable_parameter_bytes"] < stock["trainable_parameter_bytes"] / 10


def test_optimizer_none_measures_forward_and_backward_only(capsys):
    assert main(["memory", "llama-tiny", "--batch-size", "2", "--seq-len", "8", "--no-peak", "--json",
                 "--optimizer", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["optimizer"] == "none" and report["optimizer_state_bytes"] == 0
