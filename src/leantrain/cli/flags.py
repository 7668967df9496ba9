"""Every flag of a training command, generated from the fields of its config (torch-free).

A recipe config is its own fields plus the sections ``engine`` (``EngineConfig``), ``optim``
(``OptimConfig``) and ``memory`` (``MemoryOptions``). ``add_config_arguments`` gives each field one
flag (``--field-name``, or the spelling its ``setting`` names) with the field's help text and the
recipe's default, so a flag that reaches no field cannot exist. Flags keep argparse's SUPPRESS
default: ``config_from_args`` sets exactly the fields given on the command line, and the dataclass
defaults stay the one source of every default. An optional field takes "none" for None.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from leantrain.config import EngineConfig, MemoryOptions, OptimConfig
from leantrain.config.fields import hints, with_settings

SECTIONS = {EngineConfig: "engine", OptimConfig: "optimizer", MemoryOptions: "memory (docs/memory.md: what each "
                                                                            "part saves and costs)"}


def _options(kind: Any) -> tuple[Any, ...]:
    union = isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    return typing.get_args(kind) if union else (kind,)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value)
    if dataclasses.is_dataclass(value):
        return getattr(value, "spec", repr(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _converter(parse: Callable[[str], Any], optional: bool) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse names it in "invalid ... value"
    return convert


def steps_or_fraction(text: str) -> int | float:
    """``"100"`` -> 100 updates; ``"0.05"`` -> 5% of the run."""
    return float(text) if "." in text or "e" in text.lower() else int(text)


def _add(group: argparse._ActionsContainer, dest: str, item: dataclasses.Field, kind: Any, default: Any,
         extra_choices: tuple[Any, ...] = ()) -> None:
    meta = item.metadata
    names = [meta.get("flag") or "--" + item.name.replace("_", "-"), *meta.get("aliases", ())]
    help_text = meta.get("help", "")
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS,
                              "help": f"{help_text} (default {_shown(default)})".lstrip(),
                              "metavar": meta.get("metavar") or item.name.upper()}
    options = _options(kind)
    optional = type(None) in options
    plain = [option for option in options if option is not type(None)]
    if kind is bool:
        del kwargs["metavar"]
        group.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
        return
    parse = meta.get("parse")
    if parse is None:
        if set(plain) == {int, float}:
            parse = steps_or_fraction
        elif any(typing.get_origin(option) is tuple for option in plain):
            args = typing.get_args(next(option for option in plain if typing.get_origin(option) is tuple))
            kwargs["nargs"] = "+" if args[-1] is Ellipsis else len(args)
            parse = args[0]
        else:
            (parse,) = plain
    kwargs["type"] = _converter(parse, optional)
    choices = meta.get("choices")
    if choices is not None:
        choices = (*choices, *extra_choices)
        kwargs["metavar"] = "{" + ",".join(str(choice) for choice in choices) + "}"
        kwargs["type"] = _checked(_converter(parse, optional) if not extra_choices else str, choices, optional)
    group.add_argument(*names, **kwargs)


def _checked(convert: Callable[[str], Any], choices: Any, optional: bool) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        value = convert(text)
        if value is None and optional:
            return None
        if value not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, choices))}")
        return value

    return check


def add_section_arguments(parser: argparse.ArgumentParser, name: str, defaults: Any, skip: tuple[str, ...] = (),
                          extra_choices: dict[str, tuple[Any, ...]] | None = None) -> None:
    """A flag for each field of the section ``defaults`` (a section instance) held as ``name``, but ``skip``;
    ``extra_choices``: field -> values its flag accepts besides the field's own (a command's own meaning)."""
    section = type(defaults)
    group = parser.add_argument_group(SECTIONS[section])
    section_hints = hints(section)
    for item in dataclasses.fields(section):
        if item.name not in skip:
            _add(group, f"{name}.{item.name}", item, section_hints[item.name], getattr(defaults, item.name),
                 (extra_choices or {}).get(item.name, ()))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None,
                         skip: tuple[str, ...] = ()) -> None:
    """A flag for each field of ``cls`` and of its sections but ``skip`` ("field" or "section.field")."""
    defaults = cls()
    own = parser.add_argument_group(title) if title else parser
    sections = []
    for item in dataclasses.fields(cls):
        kind = hints(cls)[item.name]
        if kind in SECTIONS:
            sections.append(item.name)
        elif item.name not in skip:
            _add(own, item.name, item, kind, getattr(defaults, item.name))
    for name in sections:
        add_section_arguments(parser, name, getattr(defaults, name),
                              tuple(key.split(".", 1)[1] for key in skip if key.startswith(name + ".")))


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set on the command line: "field" or "section.field" -> value."""
    values = {}
    for dest, value in vars(args).items():
        if isinstance(value, list):  # nargs="+": one value is the value, several a tuple
            value = value[0] if len(value) == 1 else tuple(value)
        values[dest] = value
    return values


def config_from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """``base`` (default: ``cls()``) with the fields set on the command line."""
    return with_settings(base if base is not None else cls(), {k: v for k, v in given(args).items()
                                                               if k.split(".")[0] in _field_names(cls)})


def _field_names(cls: type) -> set[str]:
    return {item.name for item in dataclasses.fields(cls)}
