"""param_groups: split a model's parameters into a low-rank group and a plain AdamW group."""

from __future__ import annotations

from typing import Any

from torch import nn

from leantrain.module_names import FilterFn, Targets, find_targets


def param_groups(
    model: nn.Module, rank: int, targets: Targets | None = "all-linear", filter_fn: FilterFn | None = None,
    **low_rank_options: Any,
) -> list[dict[str, Any]]:
    """``[{"params": plain}, {"params": low_rank, "rank": rank, **low_rank_options}]`` for a low-rank optimizer.

    The low-rank group gets the 2-D weights of the linear layers that ``targets`` and ``filter_fn``
    choose (the selector of every ``apply_*``, see ``leantrain.module_names``; default "all-linear").
    Everything else that trains (embeddings, norms, biases, the LM head / output embedding, also
    when tied, and with "all-linear" a classification head) goes to the plain group. Sampled layers
    (``apply_sampling``), lean companions and LoRA adapters keep their names and parameter objects,
    so the groups are the same before and after those conversions. ``low_rank_options`` are further
    group keys (``update_proj_gap``, ``scale``, ``proj_type``, …). Parameters with
    ``requires_grad=False`` (a PEFT base model) are left out.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank={rank!r} must be a positive integer")
    output_embedding = getattr(model, "get_output_embeddings", lambda: None)()
    excluded = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    if output_embedding is not None:
        excluded.add(id(output_embedding.weight))
    names = find_targets(model, targets, filter_fn)
    weights = [model.get_submodule(name).weight for name in names]
    low_rank = list({id(w): w for w in weights if w.requires_grad and w.dim() == 2 and id(w) not in excluded}.values())
    if not low_rank:
        raise ValueError(
            f"targets={targets!r} matched no trainable linear weight in {type(model).__name__} "
            f"(it matched: {', '.join(names[:6])})"
        )
    low_rank_ids = {id(weight) for weight in low_rank}
    plain = [p for p in model.parameters() if p.requires_grad and id(p) not in low_rank_ids]
    groups = [{"params": plain}] if plain else []
    return [*groups, {"params": low_rank, "rank": rank, **low_rank_options}]
