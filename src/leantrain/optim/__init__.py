"""leantrain's optimizers: states in a subspace (GaLore, Fira, FRUGAL, SVD-free DCT) or factored (Adafactor),
optionally 8-bit, on fp32 or bf16 weights."""

from leantrain.memory.state_bytes import optimizer_state_bytes  # re-exported: the optimizers' own figure
from leantrain.optim.adafactor import Adafactor
from leantrain.optim.adamw import AdamW, AdamW8bit
from leantrain.optim.base import LowRankOptimizer
from leantrain.optim.dct import DCTAdamW
from leantrain.optim.factory import OPTIMIZERS, build_optimizer
from leantrain.optim.fira import FiraAdamW
from leantrain.optim.frugal import FrugalAdamW
from leantrain.optim.galore import GaLoreAdamW
from leantrain.optim.param_groups import param_groups
from leantrain.optim.quantized_state import QuantizedState

__all__ = [
    "OPTIMIZERS",
    "Adafactor",
    "AdamW",
    "AdamW8bit",
    "DCTAdamW",
    "FiraAdamW",
    "FrugalAdamW",
    "GaLoreAdamW",
    "LowRankOptimizer",
    "QuantizedState",
    "build_optimizer",
    "optimizer_state_bytes",
    "param_groups",
]
