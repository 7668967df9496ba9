"""The engine's one checkpoint schema: everything a run needs to continue bit for bit.

``{"format", "step", "world_size", "config", "model", "optimizer", "schedule", "records", "ranks"}``:
``model`` holds the trainable parameters only (a LoRA run saves its adapters), ``records`` the
evaluation records so far, and ``ranks`` each process's own RNG and sampler state (under DDP every
process draws its own dropout masks and sampled rows). Process 0 alone writes, atomically
(``leantrain.io.save_checkpoint``); every process reads. Under FSDP2 the sharded model and optimizer
states are gathered to full tensors with ``torch.distributed.checkpoint.state_dict``, so a checkpoint
does not depend on the layout that wrote it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from leantrain.sampling import load_sampling_state_dict, sampling_state_dict

FORMAT = "leantrain.engine/1"


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    names = trainable_names(model)
    if not sharded:
        return {name: p for name, p in model.named_parameters() if name in names}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {name: value for name, value in full.items() if name in names}


def optimizer_state(model: nn.Module, optimizer: Optimizer, sharded: bool) -> dict[str, Any]:
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def rank_state(model: nn.Module) -> dict[str, Any]:
    state = {"rng": torch.get_rng_state(), "sampling": sampling_state_dict(model)}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def gather_rank_states(model: nn.Module) -> list[dict[str, Any]]:
    """Every process's :func:`rank_state`, in rank order (a collective under several processes)."""
    own = rank_state(model)
    if not _distributed():
        return [own]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, own)
    return gathered


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], sharded: bool) -> None:
    unknown = sorted(set(state) - trainable_names(model))
    if unknown:
        raise ValueError(f"the checkpoint holds parameters this model does not train: {unknown[:3]}")
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        model.load_state_dict(state, strict=False)


def load_optimizer_state(model: nn.Module, optimizer: Optimizer, state: dict[str, Any], sharded: bool) -> None:
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def load_rank_state(model: nn.Module, states: list[dict[str, Any]], rank: int) -> bool:
    """Restore process ``rank``'s RNG and sampler state; False (nothing restored for the RNG) when the
    checkpoint was written by fewer processes, in which case the caller reseeds."""
    own = states[min(rank, len(states) - 1)]
    load_sampling_state_dict(model, own["sampling"])
    if rank >= len(states):
        return False
    torch.set_rng_state(own["rng"])
    if "cuda_rng" in own and torch.cuda.is_available():
        torch.cuda.set_rng_state(own["cuda_rng"])
    return True
