"""LowRankOptimizer: AdamW for plain groups, a subclass's subspace rule for groups with a "rank" key.

Param groups follow galore-torch and the HF Trainer's ``optim_args``: a group is low-rank iff it has
a ``rank`` key; ``update_proj_gap`` (T), ``scale`` (α) and ``proj_type`` default from the
constructor. Adam is the transformers/galore-torch form, ψ = M / (√V + ε) with the bias correction
√(1 − β₂ᵗ) / (1 − β₁ᵗ) folded into the step size; weight decay is decoupled and applied after the
update, W ← W − η·λ·W (Loshchilov & Hutter 2019), as in galore-torch. ``state_bits=8`` (a constructor
option and a group key) keeps the moments block-wise 8-bit (``quantized_state``, Dettmers et al. 2022).
Weights may be bf16: the update is computed in fp32 and rounded (sixteen_bit.py; group keys ``rounding``,
``compensation``); states stay fp32 or 8-bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from leantrain.names import STATE_BITS
from leantrain.optim.projectors import PROJ_TYPES, projected_size
from leantrain.optim.quantized_state import BLOCK_SIZE, QuantizedState, quantizable
from leantrain.optim.sharding import RowShards, check_row_sharded
from leantrain.optim.sixteen_bit import SixteenBitWeights
from leantrain.validation import is_positive_int

CHUNK_BLOCKS = 512  # 8-bit moments are updated 512 blocks (128 Ki values) at a time: temporaries stay in cache
_INNER_KEYS = ("adam_step", "exp_avg", "exp_avg_sq", "exp_avg_codes", "exp_avg_scales", "exp_avg_sq_codes",
               "exp_avg_sq_scales")  # the fp32 and the 8-bit moments


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_state_bits(state_bits: Any) -> None:
    """Raise ValueError unless ``state_bits`` is one of STATE_BITS (``leantrain.names``)."""
    if isinstance(state_bits, bool) or state_bits not in STATE_BITS:
        raise ValueError(f"state_bits={state_bits!r} is not one of {STATE_BITS} (bits per element of Adam's moments)")


class LowRankOptimizer(SixteenBitWeights):
    """Base of GaLoreAdamW, FiraAdamW, FrugalAdamW and DCTAdamW.

    Subclasses implement :meth:`low_rank_direction`; the inner rule (Adam) is :meth:`inner_rule`,
    which a subclass or test may override (e.g. plain SGD, to check a projection in isolation).
    Under FSDP2 a low-rank weight's math runs on its local rows; matrix ops go through
    :class:`~leantrain.optim.sharding.RowShards` (plain groups do element-wise math on the DTensors).

    ``state_bits`` (32 or 8; also a group key, which wins): with 8, the inner rule keeps Adam's two
    moments of each tensor of ≥ 4096 values (a whole number of 256-value blocks) block-wise 8-bit;
    smaller ones keep ordinary moments. Under FSDP2 8-bit moments are those of the local shard, plain
    per-rank tensors (as the low-rank state is).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        state_bits: int = 32,
        **low_rank_defaults: Any,
    ) -> None:
        if not (isinstance(lr, int | float) and lr >= 0):
            raise ValueError(f"lr={lr!r} must be a number >= 0")
        if not (len(betas) == 2 and all(0.0 <= beta < 1.0 for beta in betas)):
            raise ValueError(f"betas={betas!r} must be two numbers in [0, 1)")
        if not eps >= 0:
            raise ValueError(f"eps={eps!r} must be >= 0")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay={weight_decay!r} must be >= 0")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "state_bits": state_bits, "rounding": "stochastic", "compensation": False, **low_rank_defaults}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a state_dict saved before these keys existed
            group.setdefault("state_bits", 32)
            group.setdefault("rounding", "stochastic")
            group.setdefault("compensation", False)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_state_bits(group["state_bits"])
        if "rank" in group:
            self.validate_low_rank_group(group)

    def validate_low_rank_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError naming the bad value and what is allowed."""
        rank, gap, proj_type = group["rank"], group["update_proj_gap"], group["proj_type"]
        if self.uses_rank(group) and not is_positive_int(rank):
            raise ValueError(f"rank={rank!r} must be a positive integer")
        if not is_positive_int(gap):
            raise ValueError(f"update_proj_gap={gap!r} must be a positive integer (steps between subspace refreshes)")
        if not _positive_number(group["scale"]):
            raise ValueError(f"scale={group['scale']!r} must be a positive number")
        if proj_type not in PROJ_TYPES:
            raise ValueError(f"proj_type={proj_type!r} is not one of {PROJ_TYPES}")
        for param in group["params"]:
            check_row_sharded(param)
            if param.dim() != 2:
                raise ValueError(
                    f"a low-rank group (rank={rank}) got a {param.dim()}-D parameter of shape {tuple(param.shape)}; "
                    "only 2-D weights are allowed there: put it in a plain group (no 'rank' key)"
                )
            if not self.uses_rank(group):
                continue
            size = projected_size(param.shape, proj_type)
            if rank > size:
                raise ValueError(
                    f"rank={rank} is larger than the side of a {tuple(param.shape)} weight that "
                    f"proj_type={proj_type!r} reduces ({size}); use rank <= {size}"
                )

    def uses_rank(self, group: dict[str, Any]) -> bool:
        """Whether the group's ``rank`` sizes a subspace (not so for FRUGAL's whole-tensor blocks)."""
        return True

    def inner_rule(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> tuple[Tensor, float]:
        """Adam on ``grad``: update the moments in ``state``; return ψ = M/(√V+ε) and its bias correction.

        8-bit moments (``exp_avg_codes``/``_scales``, ``exp_avg_sq_codes``/``_scales``) are dequantized,
        updated in fp32, requantized, and ψ is taken from the fp32 values just computed (torchao's order).
        """
        local = grad.to_local() if isinstance(grad, DTensor) else grad
        if "adam_step" not in state:
            state["adam_step"] = 0
            if group["state_bits"] == 8 and quantizable(local):
                for moment, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                    zeros = QuantizedState.zeros(local.shape, signed, local.device)
                    state[f"{moment}_codes"], state[f"{moment}_scales"] = zeros.codes, zeros.scales
            else:  # fp32 moments, whatever the gradient's dtype (bf16 weights have bf16 gradients)
                state["exp_avg"] = torch.zeros_like(grad, dtype=torch.float32)
                state["exp_avg_sq"] = torch.zeros_like(grad, dtype=torch.float32)
        beta1, beta2 = group["betas"]
        state["adam_step"] += 1
        correction = math.sqrt(1.0 - beta2 ** state["adam_step"]) / (1.0 - beta1 ** state["adam_step"])
        if "exp_avg" in state:
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            return exp_avg / exp_avg_sq.sqrt().add_(group["eps"]), correction
        quantized_avg = QuantizedState(state["exp_avg_codes"], state["exp_avg_scales"], signed=True)
        quantized_avg_sq = QuantizedState(state["exp_avg_sq_codes"], state["exp_avg_sq_scales"], signed=False)
        grads = local.reshape(-1, BLOCK_SIZE)
        direction = torch.empty_like(grads)
        for start in range(0, len(grads), CHUNK_BLOCKS):  # bounded temporaries: ~40 bytes a value of a chunk
            blocks = slice(start, start + CHUNK_BLOCKS)
            grad32 = grads[blocks].float()
            exp_avg = quantized_avg.dequantize(blocks).mul_(beta1).add_(grad32, alpha=1.0 - beta1)
            exp_avg_sq = quantized_avg_sq.dequantize(blocks).mul_(beta2).addcmul_(grad32, grad32, value=1.0 - beta2)
            quantized_avg.copy_(exp_avg, blocks)
            quantized_avg_sq.copy_(exp_avg_sq, blocks)
            direction[blocks] = exp_avg / exp_avg_sq.sqrt().add_(group["eps"])
        direction = direction.view(local.shape)
        if isinstance(grad, DTensor):
            direction = DTensor.from_local(direction, grad.device_mesh, grad.placements, run_check=False,
                                           shape=grad.shape, stride=grad.stride())
        return direction, correction

    @staticmethod
    def reset_inner_state(state: dict[str, Any]) -> None:
        """Forget the inner rule's statistics (FRUGAL's ``reset_statistics`` at a refresh)."""
        for key in _INNER_KEYS:
            state.pop(key, None)

    @staticmethod
    def refresh_due(state: dict[str, Any], group: dict[str, Any]) -> bool:
        """True at steps 0, T, 2T, … (counted from 0; ``state["step"]`` already counts this step)."""
        return (state["step"] - 1) % group["update_proj_gap"] == 0

    def low_rank_direction(
        self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], slot: tuple[int, int], shards: RowShards
    ) -> tuple[Tensor, float]:
        """The update direction U and a factor c for a weight in a low-rank group: W ← W − η·c·U.

        ``grad`` and U are this rank's rows (all rows unless FSDP2 shards the weight); ``shards``
        knows the global shape and does the matrix ops across ranks. ``slot`` is (group index,
        position in the group): it seeds random subspaces reproducibly.
        """
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group_index, group in enumerate(self.param_groups):
            for position, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[param]
                state["step"] = state.get("step", 0) + 1
                decay = group["lr"] * group["weight_decay"]  # on this rank's rows under FSDP2, as the update
                if "rank" in group:
                    grad = param.grad.float()  # the subspace maths (SVD, DCT) runs in fp32
                    shards = RowShards(grad)
                    direction, factor = self.low_rank_direction(
                        shards.local(grad), state, group, (group_index, position), shards)
                    target = shards.local(param)
                else:
                    direction, factor = self.inner_rule(param.grad, state, group)
                    target = param
                self.apply_update_(target, direction, group["lr"] * factor, decay, group["rounding"],
                                   self.compensation_of(target, state, group),
                                   self.generator(param, (group_index, position), state["step"]))
        return loss

    def shared_tensors(self) -> list[Tensor]:
        """Tensors the optimizer holds beside its per-parameter state (e.g. one DCT basis per size)."""
        return []
