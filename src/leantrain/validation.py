"""Value checks shared by the configs (torch-free): each is a predicate; the caller names the field."""

from __future__ import annotations

from typing import Any


def is_positive_int(value: Any) -> bool:
    """An ``int`` >= 1 (``True`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
