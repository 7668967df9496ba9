"""The `leantrain` command line: argument parsing and printing only, one subcommand per module.

Each subcommand module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports happen inside ``run`` so that ``leantrain --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from leantrain import __version__
from leantrain.extras import MissingExtra


def _commands() -> list[ModuleType]:
    from leantrain.cli import demo, finetune, hyperfit, memory, pretrain, rl, schedule, sft

    return [sft, demo, finetune, hyperfit, memory, pretrain, rl, schedule]


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: a prefix of one command's flag must not capture a flag of its subcommand (`rl eval --n`).
    parser = argparse.ArgumentParser(prog="leantrain", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"leantrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, allow_abbrev=False)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


# Import-time notices of optional packages that transformers loads when they are installed (torchao's
# GPU-only kernels, its enum registrations): nothing a leantrain user can act on.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def main(argv: Sequence[str] | None = None) -> int:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, MissingExtra, MemoryError) as error:
        print(f"leantrain {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
