"""What every training command shares besides its config's flags (cli/flags.py): who prints, ``--resume``
and ``--print-config``. Torch-free, so that ``leantrain --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def is_main_process() -> bool:
    """True in a single process and in process 0 of ``torchrun`` / ``accelerate launch``: it prints."""
    return int(os.environ.get("RANK", "0")) == 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--print-config``: how the command runs its config, not part of it."""
    group = parser.add_argument_group("run")
    group.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output-dir")
    group.add_argument("--print-config", action="store_true",
                       help="print the resolved config (defaults derived, the planner's parts under "
                            "--memory-budget) as JSON and exit, without loading a model or writing anything")


def print_config(config: Any) -> None:
    """``config`` as JSON, the form a run records in its config.json."""
    from leantrain.config.fields import to_dict

    print(json.dumps(to_dict(config), indent=2))
