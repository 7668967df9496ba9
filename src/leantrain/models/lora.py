"""LoRA adapters (Hu et al., ICLR 2022) injected in place with PEFT, the task head kept trainable.

In place (unlike ``peft.get_peft_model``, which wraps), so a conversion can be named in a
picklable step description and applied again in a fresh process for peak-memory measurements.
"""

from __future__ import annotations

import logging

from torch import nn

from leantrain.module_names import TASK_HEADS, FilterFn, Targets, find_targets

DEFAULT_RANK = 8  # the rank of a "lora" run in `leantrain finetune --runs`, and of lt.apply_lora


def apply_lora(model: nn.Module, rank: int = DEFAULT_RANK, targets: Targets = "all-linear",
               filter_fn: FilterFn | None = None, *, dropout: float = 0.0) -> dict[str, str]:
    """Add rank-``rank`` adapters (alpha = rank, no dropout) to the linear layers that ``targets`` and
    ``filter_fn`` choose (``leantrain.module_names``; "all-linear": every linear layer but the output
    ones, as QLoRA found needed to match full fine-tuning), freeze every other weight but the task head
    (``TASK_HEADS``); returns adapted module name -> description."""
    quiet = logging.getLogger("bitsandbytes")  # PEFT imports it; it logs about optional 4-bit CPU kernels
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from peft import LoraConfig, inject_adapter_in_model
    finally:
        quiet.setLevel(level)

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank={rank!r} must be an integer >= 1")
    names = find_targets(model, targets, filter_fn)
    sampled = [name for name in names if "base" in model.get_submodule(name).__dict__]
    if sampled:
        raise ValueError(f"{sampled[0]} is a sampled layer: apply LoRA before apply_sampling (lt.prepare does)")
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, lora_dropout=dropout, target_modules=names), model)
    for name, parameter in model.named_parameters():
        if name.split(".")[0] in TASK_HEADS:
            parameter.requires_grad_(True)
    return {name: f"LoRA rank {rank} (alpha {rank}, dropout {dropout})" for name in names}


def merge_lora(model: nn.Module) -> dict[str, str]:
    """Fold every LoRA adapter into its base weight (W + BA·alpha/r) and put the plain layer back, in place;
    returns merged module name -> the layer now there. The model is then a stock model."""
    from peft.tuners.lora import LoraLayer

    merged = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
            merged[name] = type(module.get_base_layer()).__name__
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return merged
