"""16-bit trained weights: an optimizer whose parameters are stored in bf16 (2 bytes a weight, not 4).

Each update is computed in fp32 and written back to the bf16 parameter 1 Mi values at a time: rounded
stochastically (``rounding="stochastic"``, unbiased, rounding.py; what Q-GaLore and torchao's
``bf16_stochastic_round`` do), or to nearest (``"nearest"``: updates under half a bf16 gap are lost,
the stall the stochastic rounding exists to avoid). ``compensation=True`` keeps a bf16 buffer of what
rounding lost (Kahan summation, +2 bytes a weight) and adds it back before the next update, as
Zamirai et al. 2020, "Revisiting BFloat16 Training", §4 do. fp32 parameters are updated exactly as
before. The random draws of each update come from a generator seeded by (``rounding_seed``, the parameter's
place in the optimizer, its step count): the same bits whatever order the parameters are stepped in (the
step in backward goes last layer first) and after a resume, with nothing to save.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

from leantrain.names import ROUNDINGS
from leantrain.optim.rounding import CHUNK, stochastic_round_


def local(tensor: Tensor | None) -> Tensor | None:
    """This process's part of an FSDP2-sharded ``tensor`` (a view: writes reach it), or ``tensor`` itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def check_rounding(group: dict[str, Any]) -> None:
    """Raise ValueError unless the group's ``rounding`` and ``compensation`` are valid."""
    if group["rounding"] not in ROUNDINGS:
        raise ValueError(f"rounding={group['rounding']!r} is not one of {ROUNDINGS} (how an fp32 update is written to "
                         "bf16 weights)")
    if not isinstance(group["compensation"], bool):
        raise ValueError(f"compensation={group['compensation']!r} must be True or False")


class SixteenBitWeights(Optimizer):
    """Base of leantrain's optimizers: ``apply_update_`` writes W ← (W − s·D)·(1 − λ) to fp32 or bf16 weights.

    ``rounding`` ("stochastic") and ``compensation`` (False) are group keys, defaulted by the subclass's
    constructor (or a group may set its own); ``rounding_seed`` (an attribute, 0 unless set) seeds the draws
    with the parameter's place and step (:meth:`generator`). A bf16 parameter's optimizer states stay fp32 (or
    8-bit): ``load_state_dict`` keeps every state tensor's saved dtype (torch would cast floating-point states
    to the parameter's).
    """

    rounding_seed = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        check_rounding(self.param_groups[-1])

    def generator(self, param: Tensor, place: tuple[int, int], step: int) -> torch.Generator:
        """The rounding draws of ``param``, at ``place`` (group index, position), at its ``step``; an FSDP2
        shard also folds in its place on the mesh, so that shards draw independently (DDP replicas, whole
        tensors, draw alike and stay equal)."""
        shard = param.device_mesh.get_local_rank() if isinstance(param, DTensor) else 0
        seed = hash((self.rounding_seed, *place, step, shard)) & 0x7FFF_FFFF_FFFF_FFFF
        return torch.Generator(device=param.device).manual_seed(seed)

    @staticmethod
    def compensation_of(param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
        """The Kahan buffer of a bf16 ``param`` (kept in its ``state``) when the group compensates, else None."""
        if not group["compensation"] or param.dtype == torch.float32:
            return None
        if "compensation" not in state:
            state["compensation"] = torch.zeros_like(param)
        return state["compensation"]

    def apply_update_(self, param: Tensor, direction: Tensor, step_size: float, decay: float, rounding: str,
                      compensation: Tensor | None = None, generator: torch.Generator | None = None) -> None:
        """W ← W − ``step_size``·D, then W ← W·(1 − ``decay``) (decoupled weight decay, λ = lr·wd); a bf16 W
        is updated in fp32 (plus ``compensation``, the Kahan buffer of :meth:`compensation_of`) and rounded with
        ``generator``'s draws (:meth:`generator`)."""
        if param.dtype == torch.float32:
            param.add_(direction, alpha=-step_size)
            if decay > 0:
                param.add_(param, alpha=-decay)
            return
        if param.dtype != torch.bfloat16:
            raise ValueError(f"a parameter of dtype {param.dtype}: leantrain's optimizers train fp32 or bf16 weights")
        param, direction, compensation = (local(t) for t in (param, direction, compensation))  # FSDP2: own rows
        weights, update = param.view(-1), direction.reshape(-1)
        kept = None if compensation is None else compensation.view(-1)
        for start in range(0, weights.numel(), CHUNK):
            part = slice(start, start + CHUNK)
            master = weights[part].float()
            if kept is not None:
                master += kept[part].float()
            master.add_(update[part].float(), alpha=-step_size)
            if decay > 0:
                master.add_(master, alpha=-decay)
            if rounding == "stochastic":
                stochastic_round_(weights[part], master, generator)
            else:
                weights[part] = master
            if kept is not None:
                kept[part] = master - weights[part].float()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as torch does, but keep every state tensor's saved dtype.

        torch casts all floating-point state to the parameter's dtype; fp32 moments of a bf16 weight and
        integer subspace indices must stay as saved if a resumed run is to be bit-identical.
        """
        super().load_state_dict(state_dict)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [param for group in self.param_groups for param in group["params"]]
        for saved_id, param in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if isinstance(value, Tensor) and value.dtype != self.state[param][key].dtype:
                    self.state[param][key] = value.to(device=param.device)


def bf16_weights_(model: torch.nn.Module) -> torch.nn.Module:
    """Store ``model``'s fp32 parameters in bf16, in place (buffers, such as rotary frequencies, stay as they
    are); a parameter already in bf16 is left alone. Returns ``model``."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dtype == torch.float32:
                param.data = param.data.to(torch.bfloat16)
    return model
