"""Value checks shared by the configs (torch-free): each is a predicate; the caller names the field."""

from __future__ import annotations

from typing import Any


def is_positive_int(value: Any) -> bool:
    """An ``int`` >= 1 (``True`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def require_positive_ints(config: Any, *names: str, optional: bool = False) -> None:
    """Each field of ``config`` named is an integer >= 1 (or None, when ``optional``); else a ValueError naming it."""
    for name in names:
        value = getattr(config, name)
        if not (is_positive_int(value) or (optional and value is None)):
            allowed = "None or an integer >= 1" if optional else "an integer >= 1"
            raise ValueError(f"{type(config).__name__}.{name}={value!r} must be {allowed}")


def require_count(config: Any, name: str, value: Any, meaning: str) -> None:
    """``value`` (field ``name`` of ``config``) is an integer >= 0; ``meaning`` says what 0 does."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{type(config).__name__}.{name}={value!r} must be an integer >= 0 (0: {meaning})")
