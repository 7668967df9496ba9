"""The engine's one checkpoint schema: everything a run needs to continue bit for bit.

``{"format", "step", "world_size", "sharded", "config", "model", "optimizer", "schedule", "records",
"ranks"}``: ``model`` holds the trainable parameters only (a LoRA run saves its adapters), as full
tensors whatever the layout (gathered under FSDP2 with ``torch.distributed.checkpoint.state_dict``);
``records`` the evaluation records so far; ``ranks`` each process's own RNG and sampler state (every
process draws its own dropout masks and sampled rows). ``optimizer`` is the optimizer's state when
every process holds all of it (one process, DDP); under FSDP2 each process's shard of it goes into
``ranks`` instead — the local part of every sharded tensor, as FSDP2 and the low-rank optimizers
hold it — so such a checkpoint resumes on the same number of processes. Process 0 alone writes,
atomically (``leantrain.io.save_checkpoint``); every process reads.
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


def full_model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The model's whole state as full tensors; under FSDP2 gathered (a collective, full on process 0)."""
    if not sharded:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The trainable parameters' part of :func:`full_model_state`."""
    names = trainable_names(model)
    return {name: value for name, value in full_model_state(model, sharded).items() if name in names}


def local_optimizer_state(optimizer: Optimizer) -> dict[str, Any]:
    """This process's optimizer state with every DTensor replaced by its local shard, and where those
    were (``"sharded"``: [parameter index, key, global shape, global stride])."""
    from torch.distributed.tensor import DTensor

    state = optimizer.state_dict()
    sharded, local = [], {}
    for index, values in state["state"].items():
        local[index] = {}
        for key, value in values.items():
            if isinstance(value, DTensor):
                sharded.append([index, key, list(value.shape), list(value.stride())])
                value = value.to_local()
            local[index][key] = value
    return {"optimizer": {**state, "state": local}, "sharded": sharded}


def load_local_optimizer_state(optimizer: Optimizer, saved: dict[str, Any]) -> None:
    """Restore what :func:`local_optimizer_state` saved on this process, shards back into DTensors
    laid out as their parameters are."""
    from torch.distributed.tensor import DTensor

    optimizer.load_state_dict(saved["optimizer"])
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, key, shape, stride in saved["sharded"]:
        parameter, values = parameters[index], optimizer.state[parameters[index]]
        values[key] = DTensor.from_local(values[key], parameter.device_mesh, parameter.placements, run_check=False,
                                         shape=torch.Size(shape), stride=tuple(stride))


def rank_state(model: nn.Module, optimizer: Optimizer | None = None) -> dict[str, Any]:
    """This process's own state: RNG, sampler and, given ``optimizer`` (under FSDP2), its shard of that."""
    state = {"rng": torch.get_rng_state(), "sampling": sampling_state_dict(model)}
    if optimizer is not None:
        state["optimizer"] = local_optimizer_state(optimizer)
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def gather_rank_states(model: nn.Module, optimizer: Optimizer | None = None) -> list[dict[str, Any]] | None:
    """Every process's :func:`rank_state` on process 0, in rank order; None on the others (a collective
    under several processes)."""
    own = rank_state(model, optimizer)
    if not _distributed():
        return [own]
    main = torch.distributed.get_rank() == 0
    gathered: list[Any] | None = [None] * torch.distributed.get_world_size() if main else None
    torch.distributed.gather_object(own, gathered, dst=0)
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
