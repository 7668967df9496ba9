"""The command line's help imports neither torch nor transformers, and `python -m leantrain` runs it."""

import subprocess
import sys

import pytest

import leantrain


@pytest.mark.parametrize("argv", [["--help"], ["sft", "--help"], ["finetune", "--help"], ["pretrain", "--help"],
                                  ["memory", "--help"],
                                  ["schedule", "plot", "--help"], ["demo", "--help"],
                                  ["hyperfit", "--help"], ["rl", "--help"], ["rl", "eval", "--help"]])
def test_help_imports_neither_torch_nor_transformers(argv):
    code = ("import sys\nfrom leantrain.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    assert "usage: leantrain" in result.stdout and result.stdout.strip().endswith("[]")


def test_python_dash_m_leantrain_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "leantrain", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"leantrain {leantrain.__version__}"


def test_top_level_names_are_lazy_and_listed():
    code = ("import sys, leantrain\nassert 'torch' not in sys.modules\n"
            "assert leantrain.MemoryOptions.__module__ == 'leantrain.config.memory'\n"
            "assert 'torch' not in sys.modules\n"
            "assert leantrain.apply_lean.__module__ == 'leantrain.lean.surgery'\nassert 'torch' in sys.modules\n"
            "assert all(hasattr(leantrain, name) for name in leantrain.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        leantrain.nope  # noqa: B018
