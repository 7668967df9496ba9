"""Optional packages: a command that lacks its extra exits with one line naming the extra, never a traceback."""

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from leantrain.cli import main
from leantrain.extras import EXTRAS, MissingExtra, require


def test_every_optional_package_is_in_its_extra_and_all_has_every_extra() -> None:
    """Against the installed metadata, which make setup rebuilds whenever pyproject.toml changes."""
    requirements = importlib.metadata.requires("leantrain")
    everything = next(r for r in requirements if r.startswith("leantrain[") and 'extra == "all"' in r)
    in_all = re.match(r"leantrain\[([a-z,]+)\]", everything).group(1).split(",")
    for module, (extra, package) in EXTRAS.items():
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in requirements), (module, extra)
        assert extra in in_all, extra


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_a_hidden_package_names_its_extra(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError, as when not installed
    extra, package = EXTRAS[module]
    with pytest.raises(MissingExtra, match=rf"^{package} is not installed \(the thing needs it\): "
                                           rf"pip install 'leantrain\[{extra}\]'$"):
        require(module, "the thing")


def test_a_missing_dependency_of_an_installed_package_is_not_blamed_on_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "half_installed.py").write_text("import not_a_real_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRAS, "half_installed", ("rl", "half-installed"))
    with pytest.raises(ModuleNotFoundError) as raised:
        require("half_installed", "the thing")
    assert not isinstance(raised.value, MissingExtra) and raised.value.name == "not_a_real_dependency_of_it"


def test_require_refuses_a_module_that_is_no_extra() -> None:
    with pytest.raises(ValueError, match="'numpy' is not an optional package of leantrain; known: "):
        require("numpy", "the thing")


@pytest.mark.parametrize("command", [["rl", "--steps", "1"], ["sft", "--max-steps", "1"]])
def test_a_command_without_its_extra_says_which_in_one_line_and_leaves_no_run_folder(
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    out = tmp_path / "run"
    assert main([*command, "--output-dir", str(out)]) == 2
    printed, err = capsys.readouterr()
    assert printed == "" and err.count("\n") == 1 and err.startswith(f"leantrain {command[0]}: error: ")
    assert err.rstrip().endswith("reasoning-gym is not installed (the problem set 'arithmetic' needs it): "
                                 "pip install 'leantrain[rl]'")
    assert not out.exists()
