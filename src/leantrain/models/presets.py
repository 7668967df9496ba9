"""Small named models built from configs (random weights, no download), the offline MiniLM, or a
local HF folder; and a random batch with labels for each, so one training step has a loss."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from leantrain.names import MODEL_NAMES, MODEL_PRESETS

NUM_LABELS = 5


def is_causal_lm(model: nn.Module) -> bool:
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A preset (``MODEL_PRESETS``, random weights drawn with ``seed``), ``"minilm"`` (offline
    pretrained encoder), ``"smollm2"`` (offline SmolLM2-135M-Instruct) or a local HF model folder, set
    up for training: eager attention, training mode, no KV cache (``use_cache=False``, as for gradient
    checkpointing), and every weight in the process's own memory (``from_pretrained`` maps the files:
    their pages would become resident only when the first step reads them, inside its measured peak)."""
    import transformers

    torch.manual_seed(seed)
    if name in MODEL_PRESETS:
        config_class, kwargs = MODEL_PRESETS[name]
        config = getattr(transformers, config_class)(**kwargs, attn_implementation="eager")
        if config_class == "BertConfig":
            config.num_labels = NUM_LABELS
            model = transformers.BertForSequenceClassification(config)
        else:
            model = transformers.AutoModelForCausalLM.from_config(config)
        return _for_training(model)
    if name == "minilm":
        from leantrain.models.pretrained import minilm_path

        folder = minilm_path()
    elif name == "smollm2":
        from leantrain.models.smollm2 import smollm2_path

        folder = smollm2_path()
    else:
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)} or a HF model folder "
                             f"with config.json, got {name!r}")
    transformers.utils.logging.set_verbosity_error()  # a fresh classification head is expected
    transformers.utils.logging.disable_progress_bar()
    config = transformers.AutoConfig.from_pretrained(folder)
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or [])
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForSequenceClassification
    kwargs = {} if causal else {"num_labels": NUM_LABELS}
    return _for_training(auto.from_pretrained(folder, attn_implementation="eager", **kwargs))


def _for_training(model: nn.Module) -> nn.Module:
    model.config.use_cache = False
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()
    return model.train()


def random_batch(model: nn.Module, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, Tensor]:
    """Random token ids with labels: next-token labels for a causal LM, class labels otherwise."""
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    ids = torch.randint(model.config.vocab_size, (batch_size, seq_len), generator=generator)
    labels = ids.clone() if is_causal_lm(model) else torch.randint(model.config.num_labels, (batch_size,),
                                                                   generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {key: value.to(device) for key, value in batch.items()}
