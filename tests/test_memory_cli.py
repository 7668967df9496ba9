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
    assert main(["memory", "bert-tiny", "--batch-size", "2", "--seq-len", "8", "--optimizer", "sgd"]) == 0
    out = capsys.readouterr().out
    assert "saved for backward" in out and "cpu peak RSS" in out


def test_bad_model_and_batch_size_exit_2(capsys):
    assert main(["memory", "no/such/folder", "--no-peak"]) == 2
    assert main(["memory", "bert-tiny", "--batch-size", "0", "--no-peak"]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
