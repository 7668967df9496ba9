"""Process layout: one process, or several under ``torchrun`` / ``accelerate launch`` (DDP or FSDP2).

Accelerate reads the launcher's environment, joins the process group (gloo on CPU, NCCL on CUDA),
places the model and wraps it in DDP. FSDP2 is torch's ``fully_shard``, applied here on CPU and GPU
alike (Accelerate's FSDP plugin is GPU-only): every transformer block (HF's ``_no_split_modules``)
becomes its own unit, then an untied output head, then the root. Each process gets a contiguous
share of every global batch; the loss is weighted so that the averaged gradient is the gradient of
the mean over the global batch even when the shares differ by one example (data/micro_batches.py).
"""

from __future__ import annotations

import torch
from torch import nn


def make_accelerator():
    """An ``accelerate.Accelerator`` for this process: CPU unless CUDA is present. Its precision stays
    "no": Accelerate fixes it once per process, and the engine runs its own autocast instead, so
    that runs of different precisions can follow each other in one process."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules ``fully_shard`` wraps, innermost first: HF blocks, an untied output head, then the root."""
    block_types = set(getattr(model, "_no_split_modules", None) or ())
    units = [m for m in model.modules() if type(m).__name__ in block_types]
    output = getattr(model, "get_output_embeddings", lambda: None)()
    inputs = getattr(model, "get_input_embeddings", lambda: None)()
    if output is not None and (inputs is None or output.weight is not inputs.weight):
        units.append(output)
    return [*units, model]


def fully_shard_model(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for unit in shard_units(model):
        fully_shard(unit)
    return model
