"""What every causal-LM recipe (sft, rl, hyperfit) starts with: the model folder, the tokenizer, and the
model loaded after seeding."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from leantrain.engine import Engine


def model_folder(model: str) -> Path:
    """"smollm2" (cached on first use) or a local HF folder."""
    if model == "smollm2":
        from leantrain.models.smollm2 import smollm2_path

        return smollm2_path()
    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model {model!r} is neither 'smollm2' nor an HF model folder with config.json")
    return folder


def folder_and_tokenizer(model: str, engine: Engine | None) -> tuple[Path, object]:
    """(model folder, tokenizer): process 0 caches SmolLM2 once, the others read it."""
    from transformers import AutoTokenizer

    first = engine.accelerator.main_process_first() if engine is not None else contextlib.nullcontext()
    with first:
        folder = model_folder(model)
    return folder, AutoTokenizer.from_pretrained(folder)


def load_causal_lm(folder: Path, seed: int | None = None, dtype: str = "float32") -> tuple[nn.Module, object]:
    """(model with eager attention, tokenizer) from an HF folder, the weights loaded straight into ``dtype``
    ("float32", or "bfloat16" for 16-bit trained weights: no fp32 copy is made); ``seed`` seeds any new weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    if seed is not None:
        torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=getattr(torch, dtype))
    return model, AutoTokenizer.from_pretrained(folder)
