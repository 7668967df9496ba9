"""The README's main job, at a tiny size: real MiniLM weights and BBC text, offline."""

from leantrain.cli import main


def test_demo_prints_gradient_error_and_bytes(capsys):
    assert main(["demo", "--steps", "2", "--batch-size", "2", "--seq-len", "32"]) == 0
    out = capsys.readouterr().out
    assert "dW rel. error" in out and "converted 18 layers" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and all(0.0 < float(r[3]) < 10.0 and -1.0 <= float(r[4]) <= 1.0 for r in rows)


def test_demo_rejects_a_bad_sampling_spec_naming_it(capsys):
    assert main(["demo", "--sampling", "wtacrs@1.5"]) == 2
    assert "budget=1.5 must be a number in (0, 1]" in capsys.readouterr().err
    assert main(["demo", "--sampling", "magic@0.3"]) == 2
    assert "'magic' is not one of" in capsys.readouterr().err
    assert main(["demo", "--sampling", "wtacrs"]) == 2
    assert "is not METHOD@BUDGET" in capsys.readouterr().err
