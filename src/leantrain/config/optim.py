"""``OptimConfig``: the optimizer section of every recipe config, with ``build(model)``.

The optimizer by name (optim/factory.py), its learning rate and decay, the low-rank options, the bits of
Adam's moments, how the trained weights are stored (``weights="bf16"``: 2 bytes a weight, each update
rounded without bias, optim/sixteen_bit.py), and whether it steps inside backward (optim/in_backward.py).
``lr=None`` is the recipe's own default, filled in when the recipe resolves its config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from leantrain.config.fields import setting
from leantrain.names import LOW_RANK_OPTIMIZERS, OPTIMIZERS, ROUNDINGS, STATE_BITS, WEIGHTS
from leantrain.validation import is_positive_int

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer


@dataclass(frozen=True)
class OptimConfig:
    name: str = setting("adamw", "the low-rank ones keep Adam's states of linear weights in rank --rank",
                        flag="--optim", aliases=("--optimizer",), choices=OPTIMIZERS)
    lr: float | None = setting(None, "peak learning rate")
    weight_decay: float = setting(0.0, "decoupled weight decay of matrices (never of norms and biases)")
    betas: tuple[float, float] = setting((0.9, 0.999), "Adam's β1 and β2")
    rank: int | None = setting(None, "rank of the low-rank optimizers (none: 128)")
    update_proj_gap: int | None = setting(None, "updates between low-rank subspace refreshes (none: the "
                                                "optimizer's own: GaLore 200, DCT 1)")
    state_bits: int = setting(32, "bits per element of Adam's moments: 8 = block-wise 8-bit states",
                              choices=STATE_BITS, parse=int)
    weights: str = setting("fp32", "how the trained weights are stored: bf16 halves them and their gradients "
                                   "(each update computed in fp32 and rounded, unbiased)", choices=WEIGHTS)
    rounding: str = setting("stochastic", "bf16 weights: how an update is rounded (nearest loses updates under half "
                                          "a bf16 gap)", choices=ROUNDINGS)
    compensation: bool = setting(False, "bf16 weights: keep what rounding lost in a bf16 buffer and add it back "
                                        "(Kahan summation, +2 bytes a weight)")
    step_in_backward: bool = setting(False, "update each parameter as soon as its gradient is ready and free it "
                                            "(no gradient buffer: with --grad-accum a bf16 one while accumulating; "
                                            "no global-norm clipping; DDP, not FSDP2)")

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"OptimConfig.name={self.name!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.lr is not None and not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"OptimConfig.lr={self.lr!r} must be None (the recipe's default) or a finite number > 0")
        if not (isinstance(self.weight_decay, int | float) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"OptimConfig.weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if len(self.betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"OptimConfig.betas={self.betas!r} must be two numbers in [0, 1)")
        for name in ("rank", "update_proj_gap"):
            value = getattr(self, name)
            if value is not None and not is_positive_int(value):
                raise ValueError(f"OptimConfig.{name}={value!r} must be None or an integer >= 1")
            if value is not None and self.name not in LOW_RANK_OPTIMIZERS:
                raise ValueError(f"OptimConfig.{name}={value} is for the low-rank optimizers "
                                 f"({', '.join(LOW_RANK_OPTIMIZERS)}); {self.name!r} takes none")
        if self.state_bits not in STATE_BITS:
            raise ValueError(f"OptimConfig.state_bits={self.state_bits!r} must be one of {STATE_BITS}")
        if self.state_bits == 8 and self.name in ("sgd", "adafactor"):
            raise ValueError(f"OptimConfig.state_bits=8 quantises Adam's moments; name={self.name!r} keeps none")
        if self.weights not in WEIGHTS:
            raise ValueError(f"OptimConfig.weights={self.weights!r} is not one of {WEIGHTS}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"OptimConfig.rounding={self.rounding!r} is not one of {ROUNDINGS}")
        if not isinstance(self.compensation, bool):
            raise ValueError(f"OptimConfig.compensation={self.compensation!r} must be True or False")
        if self.weights == "fp32" and (self.rounding != "stochastic" or self.compensation):
            raise ValueError(f"OptimConfig.rounding={self.rounding!r} / compensation={self.compensation} are for "
                             "bf16 weights; with weights='fp32' an update is not rounded")
        if self.weights == "bf16" and self.name == "sgd":
            raise ValueError("OptimConfig.weights='bf16' needs one of leantrain's optimizers, which compute each "
                             f"update in fp32: {', '.join(n for n in OPTIMIZERS if n != 'sgd')}, not 'sgd'")
        if not isinstance(self.step_in_backward, bool):
            raise ValueError(f"OptimConfig.step_in_backward={self.step_in_backward!r} must be True or False")

    @property
    def dtype(self) -> str:
        """The torch dtype name of the trained weights: "float32" or "bfloat16"."""
        return {"fp32": "float32", "bf16": "bfloat16"}[self.weights]

    def build(self, model: nn.Module, seed: int = 0) -> Optimizer:
        """The optimizer over ``model``'s trainable parameters (weight decay on matrices only); with bf16 weights,
        ``seed`` seeds the rounding draws."""
        from leantrain.optim.factory import build_optimizer

        if self.lr is None:
            raise ValueError("OptimConfig.lr is None: the recipe's default is filled in when it resolves its "
                             "config; give lr to build an optimizer yourself")
        rounding = {} if self.weights == "fp32" else {"rounding": self.rounding, "compensation": self.compensation,
                                                      "rounding_seed": seed}
        return build_optimizer(self.name, model, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                               rank=self.rank, update_proj_gap=self.update_proj_gap, state_bits=self.state_bits,
                               **rounding)

    def describe(self) -> str:
        """One line: the optimizer and its memory parts ("galore r128 8-bit + step in backward")."""
        text = self.name if self.rank is None else f"{self.name} r{self.rank}"
        text += " 8-bit" if self.state_bits == 8 else ""
        if self.weights == "bf16":
            text += " + bf16 weights" + (" (nearest)" if self.rounding == "nearest" else "")
            text += " + Kahan" if self.compensation else ""
        return text + (" + step in backward" if self.step_in_backward else "")
