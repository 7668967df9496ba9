"""build_optimizer: any of the project's optimizers by name, for recipes and the command line.

Weight decay goes to matrices only (embeddings and linear weights), never to norms and biases.
The low-rank optimizers get ``param_groups``' split: linear weights in the rank-``rank`` group,
everything else in plain AdamW. ``state_bits=8`` keeps Adam's moments block-wise 8-bit. A model whose
trainable weights are bf16 gets leantrain's optimizers, which compute each update in fp32 and round it
(``rounding``, ``compensation``, ``rounding_seed``: optim/sixteen_bit.py).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from leantrain.names import OPTIMIZERS
from leantrain.optim.adafactor import Adafactor
from leantrain.optim.adamw import AdamW, AdamW8bit
from leantrain.optim.base import check_state_bits
from leantrain.optim.dct import DCTAdamW
from leantrain.optim.fira import FiraAdamW
from leantrain.optim.frugal import FrugalAdamW
from leantrain.optim.galore import GaLoreAdamW
from leantrain.optim.param_groups import param_groups

LOW_RANK = {"galore": GaLoreAdamW, "fira": FiraAdamW, "frugal": FrugalAdamW, "dct": DCTAdamW}
_SHARED_ARGUMENTS = ("params", "lr", "betas", "eps", "weight_decay")  # not per-group low-rank options
DEFAULT_RANK = 128


def _split_decay(groups: list[dict], weight_decay: float) -> list[dict]:
    out = []
    for group in groups:
        if "rank" in group:
            out.append({**group, "weight_decay": weight_decay})
            continue
        matrices = [p for p in group["params"] if p.dim() >= 2]
        vectors = [p for p in group["params"] if p.dim() < 2]
        out += [g for g in ({**group, "params": matrices, "weight_decay": weight_decay},
                            {**group, "params": vectors, "weight_decay": 0.0}) if g["params"]]
    return out


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999), rank: int | None = None,
                    update_proj_gap: int | None = None, state_bits: int = 32, rounding: str = "stochastic",
                    compensation: bool = False, rounding_seed: int = 0,
                    **low_rank_options: Any) -> torch.optim.Optimizer:
    """``name``: one of OPTIMIZERS (``leantrain.names``).

    For the low-rank ones, ``rank`` (default 128) sizes the subspace of the linear weights (``param_groups``), and
    ``update_proj_gap`` and the other group keys in ``low_rank_options`` (``scale``, ``proj_type``)
    left at None take the optimizer class's own default (DCT refreshes every step, GaLore every
    200). AdamW and SGD take none of those and raise if one is set.

    ``state_bits``: 32 (fp32 moments; "adamw" is ``torch.optim.AdamW``) or 8 (block-wise 8-bit moments,
    ``quantized_state``; "adamw" is leantrain's :class:`AdamW`, the low-rank ones get the group key
    ``state_bits``). SGD and Adafactor keep no Adam moments and refuse 8. "adafactor" keeps factored second
    moments and no first moment (optim/adafactor.py); it takes no ``betas`` (β₂ follows 1 − t^−0.8).
    bf16 trainable weights (all or none): leantrain's optimizers with the group keys ``rounding`` and
    ``compensation``, the draws seeded by ``rounding_seed``; SGD refuses them.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not one of {OPTIMIZERS}")
    check_state_bits(state_bits)
    if name in ("sgd", "adafactor") and state_bits != 32:
        raise ValueError(f"optimizer={name!r} keeps no Adam moments to quantize, got state_bits={state_bits!r}; "
                         f"state_bits=8 is for {', '.join(n for n in OPTIMIZERS if n not in ('sgd', 'adafactor'))}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    dtypes = {p.dtype for p in trainable}
    if not dtypes <= {torch.float32, torch.bfloat16} or len(dtypes) > 1:
        raise ValueError(f"the trainable weights are {sorted(map(str, dtypes))}: leantrain's optimizers train "
                         "all-fp32 or all-bf16 weights")
    sixteen = dtypes == {torch.bfloat16}
    if sixteen and name == "sgd":
        raise ValueError("bf16 weights need one of leantrain's optimizers, which compute each update in fp32: "
                         f"{', '.join(n for n in OPTIMIZERS if n != 'sgd')}, not 'sgd'")
    if not sixteen and (rounding != "stochastic" or compensation):
        raise ValueError(f"rounding={rounding!r} / compensation={compensation} are for bf16 weights; these are fp32")
    rounding_keys = {"rounding": rounding, "compensation": compensation}
    options = {key: value for key, value in {"update_proj_gap": update_proj_gap, **low_rank_options}.items()
               if value is not None}
    if name in LOW_RANK:
        optimizer_class = LOW_RANK[name]
        taken = [key for key in inspect.signature(optimizer_class).parameters if key not in _SHARED_ARGUMENTS]
        unknown = [key for key in options if key not in taken]
        if unknown:
            raise ValueError(f"optimizer={name!r} does not take {', '.join(unknown)}; it takes {', '.join(taken)}")
        groups = param_groups(model, rank=DEFAULT_RANK if rank is None else rank, **options)
        groups = [{**group, "state_bits": state_bits, **rounding_keys} for group in _split_decay(groups, weight_decay)]
        return _seeded(optimizer_class(groups, lr=lr, betas=betas), rounding_seed)
    if rank is not None:
        options = {"rank": rank, **options}
    if options:
        raise ValueError(f"optimizer={name!r} takes no low-rank option, got {', '.join(options)}; "
                         f"those are for {', '.join(LOW_RANK)}")
    groups = _split_decay([{"params": trainable}], weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "adafactor":
        return _seeded(Adafactor([{**group, **rounding_keys} for group in groups], lr=lr), rounding_seed)
    if state_bits == 8 or sixteen:
        adamw = AdamW8bit if state_bits == 8 else AdamW
        return _seeded(adamw([{**group, **rounding_keys} for group in groups], lr=lr, betas=betas), rounding_seed)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def _seeded(optimizer: torch.optim.Optimizer, rounding_seed: int) -> torch.optim.Optimizer:
    optimizer.rounding_seed = rounding_seed
    return optimizer
