"""LoRA adapters (Hu et al., ICLR 2022) injected in place with PEFT, the task head kept trainable.

In place (unlike ``peft.get_peft_model``, which wraps), so a conversion can be named in a
picklable step description and applied again in a fresh process for peak-memory measurements.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

TASK_HEADS = ("classifier", "score")


def apply_lora(model: nn.Module, rank: int = 8, dropout: float = 0.1,
               target_modules: Sequence[str] | None = None) -> list[str]:
    """Add rank-``rank`` adapters (alpha = rank) to ``target_modules`` (PEFT's default for the model
    type when None), freeze every other weight but the task head; returns the adapted module names."""
    quiet = logging.getLogger("bitsandbytes")  # PEFT imports it; it logs about optional 4-bit CPU kernels
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    finally:
        quiet.setLevel(level)

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank={rank!r} must be an integer >= 1")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = list(target_modules) if target_modules is not None else DEFAULTS.get(model_type)
    if not targets:
        raise ValueError(f"no default LoRA target modules for model type {model_type!r}; pass target_modules")
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, lora_dropout=dropout, target_modules=targets), model)
    for name, parameter in model.named_parameters():
        if name.split(".")[0] in TASK_HEADS:
            parameter.requires_grad_(True)
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
