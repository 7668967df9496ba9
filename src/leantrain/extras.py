"""Optional packages, each installed by one extra of pyproject.toml (torch-free, a leaf).

``require("reasoning_gym", "the problem set 'arithmetic'")`` imports the package or raises ``MissingExtra``,
whose one-line message names the extra to install; the command line prints it and exits with 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> (extra, PyPI name); pyproject.toml's [project.optional-dependencies] installs each
EXTRAS = {
    "reasoning_gym": ("rl", "reasoning-gym"),
    "math_verify": ("rl", "math-verify"),
    "bitsandbytes": ("bench", "bitsandbytes"),
    "torchao": ("bench", "torchao"),
    "trl": ("bench", "trl"),
    "datasets": ("hub", "datasets"),
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of ``EXTRAS``) for ``purpose``, a noun phrase ("the problem set 'arithmetic'")."""
    if module not in EXTRAS:
        raise ValueError(f"module {module!r} is not an optional package of leantrain; known: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != module:
            raise  # the package is there but one of its own dependencies is not: its error says which
        extra, package = EXTRAS[module]
        raise MissingExtra(f"{package} is not installed ({purpose} needs it): pip install 'leantrain[{extra}]'",
                           name=module) from None
