"""The whole command-line surface of the training commands: every config field (own and in the engine,
optimizer and memory sections) has exactly one flag, every flag reaches its field (a non-default value
changes the config at that field and nowhere else), and every spelling of a flag gives the same config."""

import argparse
import json

import pytest

from leantrain.cli import build_parser, main
from leantrain.cli.flags import config_from_args
from leantrain.config.fields import to_dict
from leantrain.config.finetune import FinetuneConfig
from leantrain.config.hyperfit import HyperfitConfig
from leantrain.config.pretrain import PretrainConfig
from leantrain.config.rl import RLConfig
from leantrain.config.sft import SFTConfig

COMMANDS = {"sft": SFTConfig, "rl": RLConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig,
            "hyperfit": HyperfitConfig}
# Flags that are how a command runs, not config fields.
RUN_FLAGS = {"resume", "print_config", "help", "runs", "peak"}
# Values that the generic choice (below) would make invalid with the other defaults: (value, other flags).
VALUES = {
    ("sft", "eval_problems"): ("5", []),
    ("rl", "max_rollouts"): ("40", []),
    ("pretrain", "power_a"): ("3", ["--schedule", "power"]),
    ("pretrain", "power_b"): ("-0.4", ["--schedule", "power"]),
    ("pretrain", "decay"): ("linear", []),
    ("pretrain", "max_chars"): ("1000", []),
    ("*", "memory.lora_layers"): ("1", ["--lora", "4"]),
    ("*", "optim.rank"): ("16", ["--optim", "galore"]),
    ("*", "optim.update_proj_gap"): ("7", ["--optim", "galore"]),
    ("*", "optim.betas"): ("0.8 0.99", []),
    ("*", "memory.sampling"): ("crs@0.5", []),
    ("*", "memory.budget"): ("2GiB", []),
    ("*", "optim.rounding"): ("nearest", ["--weights", "bf16"]),
    ("*", "optim.compensation"): (None, ["--weights", "bf16"]),  # None: a switch
}


def flat(config: dict) -> dict:
    """A config's fields as "field" and "section.field" (a section's values, such as a sampling config, whole)."""
    out = {}
    for key, value in config.items():
        sections = isinstance(value, dict) and key in ("engine", "optim", "memory")
        out.update({f"{key}.{k}": v for k, v in value.items()} if sections else {key: value})
    return out


def subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def config_actions(command: str) -> list[argparse.Action]:
    return [a for a in subparser(command)._actions if a.option_strings and a.dest not in RUN_FLAGS]


def parse(command: str, argv: list[str]):
    args = build_parser().parse_args([command, *argv])
    return config_from_args(COMMANDS[command], args)


def non_default(command: str, action: argparse.Action, default) -> list[str]:
    """Arguments that set ``action``'s field to a valid value other than ``default``."""
    for key in ((command, action.dest), ("*", action.dest)):
        if key in VALUES:
            value, others = VALUES[key]
            return [*others, action.option_strings[0], *([] if value is None else value.split())]
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag if not default else next(s for s in action.option_strings if s.startswith("--no-"))]
    if action.metavar and action.metavar.startswith("{"):
        choices = action.metavar.strip("{}").split(",")
        return [flag, next(c for c in choices if c != str(default) and c != "none")]
    if isinstance(default, bool) or default is None:
        text = "128"  # every optional count here accepts it, and no optional text field is checked at parse time
    elif isinstance(default, int):
        text = str(default + 1)
    elif isinstance(default, float):
        text = "0.5" if default == 0 else repr(default / 2)
    elif isinstance(default, str):
        text = "elsewhere"
    else:
        raise AssertionError(f"no non-default value for {action.dest}={default!r}")
    if isinstance(default, str) and action.nargs == "+":
        return [flag, "a.txt", "b.txt"]
    return [flag, text]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_field_has_one_flag_and_every_flag_one_field(command):
    fields = set(flat(to_dict(COMMANDS[command]())))
    dests = [a.dest for a in config_actions(command)]
    assert sorted(dests) == sorted(set(dests)), "a field has two flags"
    assert set(dests) == fields


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_changes_its_field_and_only_it(command):
    default = flat(to_dict(COMMANDS[command]()))
    for action in config_actions(command):
        argv = non_default(command, action, default[action.dest])
        changed = flat(to_dict(parse(command, argv)))
        assert changed[action.dest] != default[action.dest], (action.dest, argv)
        others = {key for key in default if changed[key] != default[key]} - {action.dest}
        expected = {a.dest for a in config_actions(command) if set(a.option_strings) & set(argv) and a is not action}
        assert others <= expected, (action.dest, argv, others)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_spelling_of_a_flag_gives_the_same_config(command):
    default = flat(to_dict(COMMANDS[command]()))
    for action in config_actions(command):
        if isinstance(action, argparse.BooleanOptionalAction) or len(action.option_strings) == 1:
            continue
        argv = non_default(command, action, default[action.dest])
        spellings = {to_dict(parse(command, [spelling if arg == action.option_strings[0] else arg for arg in argv]))
                     == to_dict(parse(command, argv)) for spelling in action.option_strings}
        assert spellings == {True}, action.option_strings


def test_optional_fields_take_none_and_bad_values_name_the_flag(capsys):
    assert parse("sft", ["--grad-clip", "none"]).engine.grad_clip is None
    assert parse("hyperfit", ["--other-corpus", "none"]).other_corpus is None
    assert parse("pretrain", ["--corpus", "a.txt", "b.txt"]).corpus == ("a.txt", "b.txt")
    with pytest.raises(SystemExit):
        parse("sft", ["--memory-budget", "lots"])
    assert "--memory-budget: 'lots' is not a positive size like 4GiB" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("rl", ["--state-bits", "4"])
    assert "--state-bits: '4' is not one of 32, 8" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["pretrain", "hyperfit"])
def test_print_config_prints_the_resolved_config_and_writes_nothing(command, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([command, "--output-dir", str(out), "--seed", "3", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = to_dict(parse(command, ["--output-dir", str(out), "--seed", "3"]).resolved())
    assert printed == json.loads(json.dumps(expected))  # JSON's lists for tuples
    assert printed["engine"]["seed"] == 3 and printed["optim"]["lr"] is not None and not out.exists()


def test_finetune_prints_each_run_of_the_comparison(capsys):
    assert main(["finetune", "--runs", "full,lora+wtacrs@0.3", "--print-config"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert list(runs) == ["full", "lora+wtacrs@0.3"]
    assert runs["full"]["memory"]["lora"] is None and runs["full"]["optim"]["lr"] == 2e-4
    assert runs["lora+wtacrs@0.3"]["memory"]["lora"] == 8 and runs["lora+wtacrs@0.3"]["optim"]["lr"] == 1e-2
    assert runs["lora+wtacrs@0.3"]["engine"]["output_dir"] == "runs/finetune/lora+wtacrs@0.3"
    assert main(["finetune", "--runs", "lora,lora+lean", "--lora", "16", "--print-config"]) == 0
    assert {run["memory"]["lora"] for run in json.loads(capsys.readouterr().out).values()} == {16}
    assert main(["finetune", "--lora", "16", "--print-config"]) == 2  # the default runs start with full
    assert "run 'full' is full fine-tuning, but LoRA rank 16 is set for every run" in capsys.readouterr().err


SMALL = {"pretrain": ["--size", "1m"], "finetune": ["--seq-len", "32", "--runs", "full"]}


@pytest.mark.parametrize("command", list(SMALL))
def test_every_training_command_plans_under_a_memory_budget(command, capsys):
    """--memory-budget reaches the planner in every command (sft, rl and hyperfit: their recipe tests)."""
    assert main([command, *SMALL[command], "--memory-budget", "64GiB", "--print-config"]) == 0
    printed = capsys.readouterr()
    assert "memory plan for a budget of 65,536 MiB" in printed.err and "chosen" in printed.err
    config = json.loads(printed.out)
    assert (config if command == "pretrain" else config["full"])["memory"]["budget"] == 64 * 2**30
    assert main([command, "--memory-budget", "1MiB", "--print-config"]) == 2
    assert "no combination fits 1 MiB" in capsys.readouterr().err
