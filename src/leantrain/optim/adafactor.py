"""Adafactor without a first moment: the optimizer-state floor (Shazeer & Stern 2018, arXiv 1804.04235).

For a weight matrix G (m × n) Adam keeps m·n second moments; Adafactor keeps their row and column means,
R (m) and C (n), and uses the rank-1 estimate V̂ = R Cᵀ / mean(R) (§3, Algorithm 4, with means instead
of sums, as HF's implementation):

    R ← β₂ₜ R + (1 − β₂ₜ) mean_cols(G² + ε₁),   C ← β₂ₜ C + (1 − β₂ₜ) mean_rows(G² + ε₁)
    U = G / √V̂,   Û = U / max(1, RMS(U) / d),   W ← W − η Û,   then W ← W (1 − η λ)

with β₂ₜ = 1 − t^(−0.8) (§7.2) and update clipping d = 1 (§6). Vectors (biases, norms) keep an ordinary
second moment. No first moment (β₁ = 0, §4): the states are (m + n) fp32 values a matrix, under 0.01 bytes
a weight for a transformer, against Adam's 8. The step size is ``lr`` itself (no relative step, no
parameter scaling), so schedules apply as to AdamW; with d = 1 an update's RMS is at most ``lr``, as
Adam's roughly is. Each matrix is updated in chunks of rows, so its temporaries are a few MiB; the
weights may be fp32 or bf16 (sixteen_bit.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from leantrain.optim.rounding import CHUNK
from leantrain.optim.sixteen_bit import SixteenBitWeights


class Adafactor(SixteenBitWeights):
    """``Adafactor(params, lr, decay_rate=-0.8, eps=(1e-30, 1e-3)... )``: see the module docstring.

    ``eps[0]`` (ε₁) is added to G²; ``eps[1]`` is unused here (it scales the step by the parameter's RMS
    in the paper's relative-step form, which leantrain does not use). ``clip_threshold`` is d.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 decay_rate: float = -0.8, eps: float = 1e-30, clip_threshold: float = 1.0,
                 weight_decay: float = 0.0, rounding: str = "stochastic", compensation: bool = False) -> None:
        if not (isinstance(lr, int | float) and lr >= 0):
            raise ValueError(f"lr={lr!r} must be a number >= 0")
        if not -1.0 <= decay_rate < 0:
            raise ValueError(f"decay_rate={decay_rate!r} must be in [-1, 0): β₂ₜ = 1 − t^decay_rate")
        if not eps > 0 or not clip_threshold > 0 or not weight_decay >= 0:
            raise ValueError(f"eps={eps!r} and clip_threshold={clip_threshold!r} must be > 0, "
                             f"weight_decay={weight_decay!r} >= 0")
        super().__init__(params, {"lr": lr, "decay_rate": decay_rate, "eps": eps, "clip_threshold": clip_threshold,
                                  "weight_decay": weight_decay, "rounding": rounding, "compensation": compensation})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for param in self.param_groups[-1]["params"]:
            if isinstance(param, DTensor):
                raise ValueError(f"Adafactor got an FSDP2-sharded parameter of shape {tuple(param.shape)}: its "
                                 "factored second moment needs each matrix's whole columns, which a row shard "
                                 "lacks; use layout='ddp' (or AdamW/GaLore under FSDP2)")

    @staticmethod
    def _rows_per_chunk(param: Tensor) -> int:
        return max(1, CHUNK // max(1, param.shape[-1]))

    def _factored_step(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any],
                       beta2: float, generator: torch.Generator) -> None:
        rows_per_chunk, eps = self._rows_per_chunk(param), group["eps"]
        if "row" not in state:
            state["row"] = torch.zeros(param.shape[0], dtype=torch.float32, device=param.device)
            state["col"] = torch.zeros(param.shape[1], dtype=torch.float32, device=param.device)
        row_mean = torch.empty_like(state["row"])
        col_sum = torch.zeros_like(state["col"])
        for start in range(0, param.shape[0], rows_per_chunk):
            squares = grad[start:start + rows_per_chunk].to(torch.float32, copy=True).square_().add_(eps)
            row_mean[start:start + rows_per_chunk] = squares.mean(dim=1)
            col_sum += squares.sum(dim=0)
        state["row"].mul_(beta2).add_(row_mean, alpha=1.0 - beta2)
        state["col"].mul_(beta2).add_(col_sum / param.shape[0], alpha=1.0 - beta2)
        row_factor = (state["row"] / state["row"].mean()).rsqrt_()
        col_factor = state["col"].rsqrt()

        def update(start: int) -> Tensor:
            chunk = grad[start:start + rows_per_chunk].to(torch.float32, copy=True)
            return chunk.mul_(row_factor[start:start + rows_per_chunk, None]).mul_(col_factor)

        squares_sum = sum(float(update(start).square().sum()) for start in range(0, param.shape[0], rows_per_chunk))
        scale = 1.0 / max(1.0, math.sqrt(squares_sum / param.numel()) / group["clip_threshold"])
        decay, kept = group["lr"] * group["weight_decay"], self.compensation_of(param, state, group)
        for start in range(0, param.shape[0], rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            self.apply_update_(param[rows], update(start), group["lr"] * scale, decay, group["rounding"],
                               None if kept is None else kept[rows], generator)

    def _unfactored_step(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any],
                         beta2: float, generator: torch.Generator) -> None:
        if "second" not in state:
            state["second"] = torch.zeros_like(param, dtype=torch.float32)
        grad32 = grad.to(torch.float32, copy=True)
        state["second"].mul_(beta2).add_(grad32.square().add_(group["eps"]), alpha=1.0 - beta2)
        update = grad32.div_(state["second"].sqrt())
        scale = 1.0 / max(1.0, float(update.square().mean().sqrt()) / group["clip_threshold"])
        self.apply_update_(param, update, group["lr"] * scale, group["lr"] * group["weight_decay"],
                           group["rounding"], self.compensation_of(param, state, group), generator)

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
                    raise RuntimeError("Adafactor does not support sparse gradients")
                state = self.state[param]
                state["step"] = state.get("step", 0) + 1
                beta2 = 1.0 - state["step"] ** group["decay_rate"]
                generator = self.generator(param, (group_index, position), state["step"])
                if param.dim() == 2:
                    self._factored_step(param, param.grad, state, group, beta2, generator)
                else:
                    self._unfactored_step(param, param.grad, state, group, beta2, generator)
        return loss
