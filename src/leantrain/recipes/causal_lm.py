"""What every causal-LM recipe (hyperfit, rl) starts with: the model folder, the model and tokenizer,
its conversions, and the engine with the model loaded on every process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from leantrain.convert import Conversion
from leantrain.engine import Engine, EngineConfig
from leantrain.memory.options import MemoryOptions
from leantrain.module_names import LastLayers
from leantrain.sampling import SamplingConfig


def model_folder(model: str) -> Path:
    """"smollm2" (cached on first use) or a local HF folder."""
    if model == "smollm2":
        from leantrain.models.smollm2 import smollm2_path

        return smollm2_path()
    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model {model!r} is neither 'smollm2' nor an HF model folder with config.json")
    return folder


def load_causal_lm(folder: Path) -> tuple[nn.Module, object]:
    """(model in fp32 with eager attention, tokenizer) from an HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder)


def lm_conversions(lora: int | None, lora_layers: int | None, sampling: SamplingConfig | None, lean: bool,
                   num_layers: int) -> tuple[Conversion, ...]:
    """LoRA (all linear layers but the head, or the last ``lora_layers`` of the ``num_layers`` blocks, checked
    here; no dropout), then sampling, then lean: the order of ``lt.prepare``."""
    if lora_layers is not None:
        LastLayers(lora_layers, num_layers)  # a bad count fails now, not when the model is converted
    return MemoryOptions(lora=lora, lora_layers=lora_layers, sampling=sampling, lean=lean).conversions()


def open_run(engine_config: EngineConfig, output_dir: str, model: str, seed: int,
             on_log: Callable[[dict], None] | None) -> tuple[Engine, Path, Path, nn.Module, object]:
    """(engine, run folder, model folder, model, tokenizer): the run folder made, the model loaded after
    seeding (process 0 caches SmolLM2 once, the others read it)."""
    run_dir = Path(output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(engine_config, run_dir, on_record=on_log)
    with engine.accelerator.main_process_first():
        folder = model_folder(model)
    torch.manual_seed(seed)
    network, tokenizer = load_causal_lm(folder)
    return engine, run_dir, folder, network, tokenizer
