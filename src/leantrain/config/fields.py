"""What every config field says about itself, once: its help text and command-line spelling (torch-free).

A config is a frozen dataclass. ``setting(default, "help")`` declares a field with the text that both
``--help`` and docs/ show; ``flag``/``aliases`` name its command-line spelling when it is not
``--field-name``; ``choices`` and ``parse`` (text -> value) say what the command line accepts, ``metavar``
how ``--help`` names the value.
cli/flags.py generates every flag from these, so a flag cannot exist without the field it sets.
``to_dict`` / ``from_dict`` are the JSON round trip of a config (sections and ``SamplingConfig`` nested).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

MISSING: Any = dataclasses.MISSING


def setting(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
            flag: str | None = None, aliases: Sequence[str] = (), choices: Sequence[Any] | None = None,
            parse: Callable[[str], Any] | None = None, metavar: str | None = None) -> Any:
    """A dataclass field with its help text and command-line spelling (module docstring)."""
    metadata = {"help": help, "flag": flag, "aliases": tuple(aliases), "choices": choices, "parse": parse,
                "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def hints(cls: type) -> dict[str, Any]:
    """The resolved type of each field of the dataclass ``cls``."""
    return typing.get_type_hints(cls)


def dataclass_in(kind: Any) -> type | None:
    """The dataclass that a field of type ``kind`` holds (``X`` or ``X | None``), else None."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union \
        else (kind,)
    found = [option for option in options if dataclasses.is_dataclass(option)]
    return found[0] if found else None


def to_dict(config: Any) -> dict[str, Any]:
    """JSON values of ``config`` (nested dataclasses as dicts, tuples as lists)."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """The inverse of ``to_dict``; a key that is not a field of ``cls`` is an error naming it."""
    known = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}; its fields are {', '.join(sorted(known))}")
    types_of = hints(cls)
    values = {}
    for name, value in data.items():
        nested = dataclass_in(types_of[name])
        if nested is not None and isinstance(value, dict):
            value = from_dict(nested, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def check_sections(config: Any) -> None:
    """Each field of ``config`` whose type is a dataclass (a section) holds one, else a ValueError naming it."""
    for name, kind in hints(type(config)).items():
        if dataclasses.is_dataclass(kind) and not isinstance(getattr(config, name), kind):
            raise ValueError(f"{type(config).__name__}.{name} must be a {kind.__name__}, "
                             f"got {type(getattr(config, name)).__name__}")


def with_settings(config: Any, settings: dict[str, Any]) -> Any:
    """``config`` with ``settings`` ("field" or "section.field" -> value) replaced."""
    own = {name: value for name, value in settings.items() if "." not in name}
    sections: dict[str, dict[str, Any]] = {}
    for name, value in settings.items():
        if "." in name:
            section, field = name.split(".", 1)
            sections.setdefault(section, {})[field] = value
    for section, values in sections.items():
        own[section] = dataclasses.replace(getattr(config, section), **values)
    return dataclasses.replace(config, **own)
