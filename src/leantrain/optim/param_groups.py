"""param_groups: split a model's parameters into a low-rank group and a plain AdamW group."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from leantrain.models.lora import TASK_HEADS
from leantrain.module_names import name_matcher

PRESETS = ("all-linear",)


def param_groups(
    model: nn.Module, rank: int, targets: str | Sequence[str] = "all-linear", **low_rank_options: Any
) -> list[dict[str, Any]]:
    """``[{"params": plain}, {"params": low_rank, "rank": rank, **low_rank_options}]`` for a low-rank optimizer.

    The low-rank group gets the 2-D weights of the linear layers (``nn.Linear`` and HF GPT-2 ``Conv1D``)
    that ``targets`` selects: "all-linear", or module-name patterns (a pattern matches a name it equals,
    a dotted suffix of it, or a regular expression matching all of it). Everything else that trains —
    embeddings, norms, biases, the LM head / output embedding (also when tied) and, with "all-linear",
    a classification head (``classifier``, ``score``) — goes to the plain group. ``low_rank_options``
    are further group keys (``update_proj_gap``, ``scale``, ``proj_type``, …).
    Parameters with ``requires_grad=False`` (a PEFT base model) are left out.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank={rank!r} must be a positive integer")
    if isinstance(targets, str):
        if targets not in PRESETS:
            raise ValueError(f"targets={targets!r} is not a preset {PRESETS}; pass a list of module-name patterns")
        selected = lambda name: name.split(".")[0] not in TASK_HEADS  # noqa: E731
    else:
        selected = name_matcher(list(targets))

    output_embedding = getattr(model, "get_output_embeddings", lambda: None)()
    excluded = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    if output_embedding is not None:
        excluded.add(id(output_embedding.weight))
    low_rank, linear_names = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear | Conv1D) or module is output_embedding:
            continue
        linear_names.append(name)
        weight = module.weight
        if selected(name) and weight.requires_grad and weight.dim() == 2 and id(weight) not in excluded:
            low_rank.append(weight)
    if not low_rank:
        sample = ", ".join(linear_names[:6]) or "none"
        raise ValueError(
            f"targets={targets!r} matched no trainable linear weight in {type(model).__name__} "
            f"(its linear layers include: {sample})"
        )
    low_rank_ids = {id(weight) for weight in low_rank}
    plain = [p for p in model.parameters() if p.requires_grad and id(p) not in low_rank_ids]
    groups = [{"params": plain}] if plain else []
    return [*groups, {"params": low_rank, "rank": rank, **low_rank_options}]
