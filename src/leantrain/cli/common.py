"""Flags shared by the training commands, spelled once: the engine's, the optimizer's and the parts'.

Torch-free, so that ``leantrain --help`` stays fast; the choice lists come from leantrain.names.
"""

from __future__ import annotations

import argparse
import os
import re


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


_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kmg])(i?)(b?)|b?)\s*", re.IGNORECASE)


def memory_size(text: str) -> int:
    """``"4GiB"``, ``"512MiB"``, ``"1.5G"`` (binary), ``"2GB"`` (decimal) or a number of bytes -> bytes."""
    match = _SIZE.fullmatch(text)
    if match is None or not float(match.group(1)) > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive size like 4GiB, 512MiB or 1.5G")
    number, prefix, binary, byte = match.groups()
    power = "kmg".index(prefix.lower()) + 1 if prefix else 0
    decimal = bool(byte) and not binary  # "GB" is 10^9; "G", "GiB" are 2^30
    return int(float(number) * (1000 if decimal else 1024) ** power)


def add_memory_arguments(parser: argparse.ArgumentParser, budget: bool = True) -> None:
    """The memory parts of ``leantrain.memory.options.MemoryOptions`` (the optimizer's are in its group)."""
    from leantrain.names import CHECKPOINTING, STATE_BITS

    group = parser.add_argument_group("memory (docs/memory.md: what each saves and costs)")
    group.add_argument("--lora", "--lora-rank", dest="lora", type=int, default=None, metavar="RANK",
                       help="LoRA of this rank instead of full")
    group.add_argument("--lora-layers", type=int, default=None, metavar="N", help="LoRA on the last N blocks only")
    group.add_argument("--checkpointing", default=None, choices=CHECKPOINTING,
                       help="rerun each layer in backward: keep its input only (layers), or its matmul results too "
                            "(selective) (default: off)")
    group.add_argument("--lean", action="store_true", help="swap in the exact memory-lean companions")
    group.add_argument("--chunked-loss", action="store_true",
                       help="the LM-head loss in chunks, never the B x L x V logits (part of --lean)")
    group.add_argument("--state-bits", type=int, default=32, choices=STATE_BITS,
                       help="bits per element of Adam's moments: 8 = block-wise 8-bit states (default 32)")
    group.add_argument("--step-in-backward", action="store_true",
                       help="update each parameter as soon as its gradient is ready and free it (no gradient "
                            "buffer; no global-norm clipping, no --grad-accum)")
    if budget:
        group.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                           help="let the planner choose the parts above: the fastest combination whose step fits "
                                "SIZE (e.g. 4GiB), keeping --lora and --optim")
    add_sampling_arguments(parser)


def memory_options(args: argparse.Namespace, optimizer: str):
    """The ``MemoryOptions`` of the flags above (``optimizer``: the optimizer's name)."""
    from leantrain.memory.options import MemoryOptions

    return MemoryOptions(lora=args.lora, lora_layers=args.lora_layers, sampling=sampling_config(args),
                         checkpointing=args.checkpointing, lean=args.lean, chunked_loss=args.chunked_loss,
                         optimizer=optimizer, rank=args.rank, state_bits=args.state_bits,
                         step_in_backward=args.step_in_backward)
