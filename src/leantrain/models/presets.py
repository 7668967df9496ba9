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


def _source(name: str) -> tuple[type, object, Path | None]:
    """(the model class, or the Auto class that picks it; the config; the folder whose weights to load, or None)."""
    import transformers

    if name in MODEL_PRESETS:
        config_class, kwargs = MODEL_PRESETS[name]
        config = getattr(transformers, config_class)(**kwargs, attn_implementation="eager")
        if config_class == "BertConfig":
            config.num_labels = NUM_LABELS
            return transformers.BertForSequenceClassification, config, None
        return transformers.AutoModelForCausalLM, config, None
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
    config = transformers.AutoConfig.from_pretrained(folder)
    config._attn_implementation = "eager"
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or [])
    if not causal:
        config.num_labels = NUM_LABELS
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForSequenceClassification
    weights = [*folder.glob("*.safetensors"), *folder.glob("*.bin")]
    return auto, config, folder if weights else None  # a config-only folder: random weights


def _random(model_class: type, config: object, **kwargs: object) -> nn.Module:
    make = model_class.from_config if hasattr(model_class, "from_config") else model_class._from_config
    return make(config, **kwargs)


def build_model(name: str, seed: int = 0, dtype: str = "float32", layers: int | None = None) -> nn.Module:
    """A preset (``MODEL_PRESETS``, random weights drawn with ``seed``), ``"minilm"`` (offline
    pretrained encoder), ``"smollm2"`` (offline SmolLM2-135M-Instruct) or a local HF model folder (a folder
    with a config but no weights gets random ones), set up for training: eager attention, training mode, no
    KV cache (``use_cache=False``, as for gradient checkpointing), and every weight in the process's own
    memory (``from_pretrained`` maps the files: their pages would become resident only when the first step
    reads them, inside its measured peak). The weights are made or loaded straight in ``dtype`` ("float32" or
    "bfloat16"), never in fp32 first; a model whose weights would take more than 90% of the available
    memory is refused before it is built. ``layers``: the same model with only that many layers, random
    weights (what the planner measures and scales to the model's depth)."""
    import transformers

    from leantrain.memory.available import check_fits

    transformers.utils.logging.set_verbosity_error()  # a fresh classification head is expected
    transformers.utils.logging.disable_progress_bar()
    model_class, config, folder = _source(name)
    if layers is not None:
        config, folder = with_layers(config, layers), None
    torch_dtype = getattr(torch, dtype)
    count = sum(p.numel() for p in _meta(model_class, config).parameters())
    check_fits(count * torch_dtype.itemsize, f"{name}'s {count / 1e9:.2f}B weights in {dtype}")
    torch.manual_seed(seed)
    if folder is None:
        return _for_training(_random(model_class, config, dtype=torch_dtype))
    return _for_training(model_class.from_pretrained(folder, config=config, dtype=torch_dtype))


def meta_model(name: str) -> nn.Module:
    """The model ``build_model(name)`` builds, on the meta device: its code imported, no memory allocated."""
    model_class, config, _ = _source(name)
    return _meta(model_class, config)


def _meta(model_class: type, config: object) -> nn.Module:
    with torch.device("meta"):
        return _random(model_class, config)


def with_layers(config: object, layers: int) -> object:
    """A copy of an HF config with ``layers`` hidden layers (and its per-layer lists cut to match)."""
    import copy

    reduced = copy.deepcopy(config)
    reduced.num_hidden_layers = layers
    if isinstance(getattr(reduced, "layer_types", None), list):
        reduced.layer_types = reduced.layer_types[:layers]
    return reduced


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
