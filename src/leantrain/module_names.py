"""Choosing modules or parameters by name: one pattern language for every conversion and grouping.

A pattern matches a name it equals, a dotted suffix of the name (``"mlp.down_proj"`` matches
``"model.layers.0.mlp.down_proj"``), or a regular expression matching the whole name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence


def name_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A predicate true for names any of ``patterns`` matches; bad patterns raise ValueError."""
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"targets: pattern {pattern!r} must be a non-empty string")
        try:
            compiled.append((pattern, re.compile(pattern)))
        except re.error as error:
            raise ValueError(f"targets: pattern {pattern!r} is not a valid regular expression: {error}") from None
    return lambda name: any(name == p or name.endswith("." + p) or rx.fullmatch(name) for p, rx in compiled)
