"""Flags shared by the training commands, spelled once: the engine's, the optimizer's and the parts'.

Torch-free, so that ``leantrain --help`` stays fast; the choice lists come from leantrain.names.
"""

from __future__ import annotations

import argparse
import os


def is_main_process() -> bool:
    """True in a single process and in process 0 of ``torchrun`` / ``accelerate launch``: it prints."""
    return int(os.environ.get("RANK", "0")) == 0


def steps_or_fraction(text: str) -> int | float:
    """``"100"`` -> 100 updates; ``"0.05"`` -> 5% of the run."""
    return float(text) if "." in text or "e" in text.lower() else int(text)


def add_engine_arguments(parser: argparse.ArgumentParser, output_dir: str) -> None:
    from leantrain.names import LAYOUTS, PRECISIONS

    group = parser.add_argument_group("engine")
    group.add_argument("--output-dir", "--out", dest="output_dir", default=output_dir,
                       help=f"run folder: metrics.jsonl, checkpoint.safetensors (default {output_dir})")
    group.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output-dir")
    group.add_argument("--grad-accum", type=int, default=1, help="micro-batches per update and process (default 1)")
    group.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="bf16: autocast; weights and optimizer states stay fp32 (default fp32)")
    group.add_argument("--layout", default="ddp", choices=LAYOUTS,
                       help="under torchrun / accelerate launch: DDP replicas or FSDP2 shards (default ddp)")
    group.add_argument("--seed", type=int, default=0)


def add_optimizer_arguments(parser: argparse.ArgumentParser, lr: float | str, weight_decay: float) -> None:
    """``lr``: the default peak learning rate, or a text saying how the command chooses it."""
    from leantrain.names import OPTIMIZERS

    group = parser.add_argument_group("optimizer")
    group.add_argument("--optim", "--optimizer", dest="optim", default="adamw", choices=OPTIMIZERS,
                       help="the low-rank ones keep Adam's states of linear weights in rank --rank (default adamw)")
    group.add_argument("--lr", type=float, default=lr if isinstance(lr, float) else None,
                       help=f"peak learning rate (default {lr:g})" if isinstance(lr, float) else f"peak learning "
                       f"rate (default: {lr})")
    group.add_argument("--weight-decay", type=float, default=weight_decay)
    group.add_argument("--rank", type=int, default=None, help="rank of the low-rank optimizers (default 128)")
    group.add_argument("--update-proj-gap", type=int, default=None,
                       help="low-rank subspace refresh interval (default: the optimizer's own)")


def add_sampling_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    from leantrain.names import SOURCES

    shown = default or "exact gradients"
    group = parser.add_argument_group("sampled-activation backprop")
    group.add_argument("--sampling", default=default, metavar="METHOD@BUDGET",
                       help=f"sample the 'paper' layers' weight gradients, e.g. wtacrs@0.3 (default: {shown})")
    group.add_argument("--importance", default="running", choices=SOURCES,
                       help="row importance of the sampled layers (default running)")


def sampling_config(args: argparse.Namespace):
    """The ``SamplingConfig`` of ``--sampling``/``--importance``/``--seed``, or None for exact gradients."""
    from leantrain.sampling import SamplingConfig

    if args.sampling is None:
        return None
    return SamplingConfig.from_spec(args.sampling, importance=args.importance, seed=args.seed)
