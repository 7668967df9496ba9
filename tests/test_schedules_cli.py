"""`leantrain schedule plot` and `predict` end to end on small synthetic logs."""

import argparse
import json

import pytest
import torch

from leantrain.cli import main
from leantrain.cli import schedule as schedule_cli
from leantrain.names import SCHEDULES
from leantrain.schedules import OPTIONS, build, lr_curve, options_for
from leantrain.schedules.predictor import LossCurveFit


def run_cli(argv):
    parser = argparse.ArgumentParser()
    schedule_cli.add_arguments(parser)
    return schedule_cli.run(parser.parse_args(argv))


def test_every_schedule_has_its_options():
    assert set(OPTIONS) == set(SCHEDULES)


def test_an_option_the_schedule_does_not_take_is_an_error():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="schedule 'wsd' does not take 'a'; it takes decay_steps, decay, half_life"):
        build("wsd", optimizer, total_steps=10, a=3.0)
    with pytest.raises(ValueError, match="schedule 'cosine' does not take 'decay'; it takes no option"):
        options_for("cosine", decay="exp")
    with pytest.raises(ValueError, match="min_lr_ratio must be 0 for the refined schedule"):
        build("refined", optimizer, total_steps=3, min_lr_ratio=0.1, grad_norms=[1.0, 1.0, 1.0])
    # unset settings (None) are left out; facts about the run go only to a schedule that takes them
    assert options_for("wsd", {"batch_size": 8}, a=None, decay="exp") == {"decay": "exp"}
    assert options_for("power", {"batch_size": 8}, a=3.0) == {"batch_size": 8, "a": 3.0}


def test_cli_refuses_a_setting_no_chosen_schedule_takes(capsys):
    assert main(["schedule", "plot", "wsd", "cosine", "--a", "3", "--out", "unused.png"]) == 2
    assert "--a is a setting of power; wsd, cosine do not take it" in capsys.readouterr().err


def test_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "lr.png"
    assert run_cli(["plot", "cosine", "wsd", "power", "--total-steps", "50", "--warmup-steps", "5",
                    "--batch-size", "8", "--tokens-per-step", "1024", "--decay", "exp", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and "power: start 0" in capsys.readouterr().out


def test_predict_from_jsonl_logs(tmp_path, capsys):
    truth = LossCurveFit(l0=2.0, a=1.0, alpha=0.5, c=0.3, decay=0.99)
    paths = {}
    for name in ("constant", "cosine", "wsd"):
        lrs = lr_curve(name, 300, lr=3e-3, warmup_steps=10)
        losses = truth.predict(lrs)
        records = [{"step": s, "lr": lr} for s, lr in enumerate(lrs, 1)]
        records += [{"step": s, "val_loss": float(losses[s - 1])} for s in range(10, 301, 10)]
        paths[name] = tmp_path / name / "metrics.jsonl"
        paths[name].parent.mkdir()
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "predict.png"
    assert run_cli(["predict", "--fit", str(paths["constant"]), str(paths["cosine"]), "--target", str(paths["wsd"]),
                    "--momentum-decay", "0.99", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    error = float(printed.split("(error ")[1].split("%")[0])
    assert abs(error) < 0.5 and out.exists()


def test_plot_refined_from_logged_grad_norms(tmp_path, capsys):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "lr": 1e-3, "grad_norm": 2.0}) + "\n" for s in range(1, 12)))
    assert run_cli(["plot", "refined", "--grad-norms", str(metrics), "--out", str(tmp_path / "r.png")]) == 0
    assert "refined: start 0.001, peak 0.001, last 0 over 11 steps" in capsys.readouterr().out
