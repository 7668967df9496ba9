"""`leantrain schedule plot` and `predict` end to end on small synthetic logs."""

import argparse
import json

from leantrain.cli import schedule as schedule_cli
from leantrain.schedules import SCHEDULES, lr_curve
from leantrain.schedules.predictor import LossCurveFit


def run_cli(argv):
    parser = argparse.ArgumentParser()
    schedule_cli.add_arguments(parser)
    return schedule_cli.run(parser.parse_args(argv))


def test_cli_knows_every_schedule():
    assert schedule_cli.SCHEDULES == SCHEDULES


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
