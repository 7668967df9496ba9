"""The memory planner: the fastest combination of memory parts whose training step fits a budget.

Given a model, a batch shape and a budget in bytes, ``plan_memory`` estimates the total bytes of one
training step (weights, gradients, optimizer states, saved activations and the largest transient
buffers) for every combination of the exact parts — chunked LM-head loss, 8-bit optimizer states, the
optimizer step in backward, layer checkpointing, the lean companions — and, as a last resort, WTA-CRS
(approximate weight gradients), keeping the LoRA of the ``memory`` section and the optimizer of the
``optim`` one. It chooses the combination with the smallest estimated step time that fits, fewest parts
on a tie, and says why.

The estimate is leantrain's own accounting (memory/saved_tensors.py) run on a one-example forward of the
converted model, scaled by the batch size (saved activations are linear in it), plus the optimizer's
states after one step, plus the transients: the logits of the stock LM-head loss (its fp32 copy and its
gradient besides the saved log-softmax, 2 × B·L·V·4 bytes; a chunk's worth with the chunked loss),
under checkpointing the rerun of the largest layer, and the optimizer step's temporaries (twice the
largest parameter). The sum is an upper bound: the phases do not all peak at once. Step times are
relative costs measured on this project's CPU benchmarks (``TIME_COST``; BENCHMARKS.md, "Causal-LM
SFT at the memory frontier"), a product over the parts that are on. A ``margin`` (default 10%) is
kept free for what the accounting does not see (allocator slack, library workspaces).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from leantrain.config import MemoryOptions, OptimConfig, describe_parts
from leantrain.memory.saved_tensors import saved_tensor_bytes
from leantrain.memory.state_bytes import optimizer_state_bytes, parameter_bytes
from leantrain.sampling import SamplingConfig

# Relative step time of each part, on top of the others (measured: BENCHMARKS.md, "Causal-LM SFT").
TIME_COST = {"chunked_loss": 1.0, "state_bits": 1.03, "step_in_backward": 1.0, "checkpointing": 1.15,
             "lean": 1.25, "sampling": 1.5}
# WTA-CRS estimates the weight gradients; the planner takes it only when no exact combination fits.
SAMPLING = SamplingConfig("wtacrs", 0.3)
_LAYER = re.compile(r"(.*\.(?:layers|layer|h|block|blocks)\.\d+)(?:\.|$)")
MIB = 2**20


@dataclass(frozen=True)
class Estimate:
    memory: MemoryOptions
    optim: OptimConfig
    weights: int
    gradients: int
    states: int
    activations: int
    transient: int
    time: float

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.states + self.activations + self.transient

    @property
    def parts(self) -> tuple[MemoryOptions, OptimConfig]:
        return self.memory, self.optim


@dataclass(frozen=True)
class Plan:
    budget: int
    margin: float
    estimates: list[Estimate]  # every combination, fastest first
    memory: MemoryOptions  # the chosen memory parts, and the optimizer with its chosen state bits / step
    optim: OptimConfig

    def fits(self, estimate: Estimate) -> bool:
        return estimate.total <= self.budget * (1 - self.margin)

    @property
    def chosen(self) -> Estimate:
        return next(e for e in self.estimates if e.parts == (self.memory, self.optim))

    def explain(self) -> str:
        """What was chosen and why: the faster combinations that did not fit, and the choice."""
        lines = [f"memory plan for a budget of {self.budget / MIB:,.0f} MiB ({self.margin:.0%} kept free):"]
        for estimate in self.estimates:
            chosen = estimate.parts == (self.memory, self.optim)
            mark = "chosen" if chosen else ("fits" if self.fits(estimate) else "too big")
            lines.append(f"  {mark:>7}  {estimate.total / MIB:>9,.0f} MiB  {estimate.time:.2f}x time  "
                         f"{describe_parts(estimate.memory, estimate.optim)}")
            if chosen:
                break
        return "\n".join(lines)


def _layer_peak(by_name: dict[str, int]) -> int:
    """The largest per-layer sum of saved bytes (module names ``...layers.N...``)."""
    layers: dict[str, int] = {}
    for name, size in by_name.items():
        match = _LAYER.match(name)
        if match:
            layers[match.group(1)] = layers.get(match.group(1), 0) + size
    return max(layers.values(), default=0)


def _activation_bytes(model: nn.Module, batch: dict, memory: MemoryOptions) -> tuple[int, int]:
    """(saved bytes, largest layer's saved bytes) of one forward of a copy of ``model`` with ``memory``."""
    converted = copy.deepcopy(model)
    replace(memory, lora=None, lora_layers=None).apply(converted)
    saved = saved_tensor_bytes(converted.train(), batch)
    return saved.total, _layer_peak(saved.by_name)


def states_after_a_step(model: nn.Module, optim: OptimConfig) -> int:
    """Bytes of ``optim``'s states over a copy of ``model`` after one step on zero gradients."""
    trained = copy.deepcopy(model)
    optimizer = replace(optim, lr=optim.lr or 1e-3).build(trained)  # the states do not depend on it
    for param in trained.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    optimizer.step()
    return optimizer_state_bytes(optimizer)


def lm_head_vocabulary(model: nn.Module) -> int:
    """The vocabulary of ``model``'s language-model head (its logits are the loss's largest buffers), or 0 for a
    model without one (a classifier's head is small)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return 0 if head is None else head.weight.shape[0]


def planned(config: Any, model: str | nn.Module, batch_size: int, seq_len: int,
            say: Callable[[str], None] = print) -> Any:
    """A recipe config (its ``memory`` and ``optim`` sections) with the parts the planner chooses for steps of
    ``batch_size`` × ``seq_len`` tokens of ``model`` within ``config.memory.budget``, resolved again (a chosen
    sampling is seeded by the run); the plan's reasoning goes to ``say``. Without a budget, ``config``."""
    if config.memory.budget is None:
        return config
    plan = plan_memory(model, batch_size, seq_len, config.memory.budget, memory=config.memory, optim=config.optim)
    say(plan.explain())
    return replace(config, memory=plan.memory, optim=plan.optim).resolved()


def parts_on(memory: MemoryOptions, optim: OptimConfig) -> list[str]:
    """The parts of ``TIME_COST`` that are on (32-bit states count as off)."""
    values = {"chunked_loss": memory.chunked_loss, "state_bits": optim.state_bits != 32,
              "step_in_backward": optim.step_in_backward, "checkpointing": memory.checkpointing is not None,
              "lean": memory.lean, "sampling": memory.sampling is not None}
    return [part for part in TIME_COST if values[part]]


def _time(memory: MemoryOptions, optim: OptimConfig) -> float:
    time = 1.0
    for part in parts_on(memory, optim):
        time *= TIME_COST[part]
    return time


def candidates(memory: MemoryOptions, optim: OptimConfig) -> list[tuple[MemoryOptions, OptimConfig]]:
    """Every combination of the parts (module docstring) on top of ``memory``'s LoRA and ``optim``'s optimizer."""
    found = []
    for chunked, bits, in_backward, layers, lean, sampled in itertools.product((False, True), repeat=6):
        if (lean and chunked) or (bits and optim.name == "sgd"):
            continue  # lean includes the chunked loss; SGD keeps no moments to quantise
        found.append((replace(memory, chunked_loss=chunked, checkpointing="layers" if layers else None, lean=lean,
                              sampling=SAMPLING if sampled else None),
                      replace(optim, state_bits=8 if bits else 32, step_in_backward=in_backward)))
    return found


def plan_memory(model: str | nn.Module, batch_size: int, seq_len: int, budget: int,
                memory: MemoryOptions | None = None, optim: OptimConfig | None = None, margin: float = 0.1) -> Plan:
    """The plan for ``model`` (a name ``build_model`` knows, or a model) at ``batch_size`` × ``seq_len``
    tokens within ``budget`` bytes; raises ValueError naming the smallest estimate when nothing fits."""
    from leantrain.models.presets import build_model, random_batch

    if budget <= 0:
        raise ValueError(f"memory budget={budget!r} must be a positive number of bytes")
    memory, optim = memory or MemoryOptions(), optim or OptimConfig()
    network = build_model(model) if isinstance(model, str) else model
    if memory.lora is not None:
        network = copy.deepcopy(network)
        MemoryOptions(lora=memory.lora, lora_layers=memory.lora_layers, lora_targets=memory.lora_targets).apply(network)
    one = random_batch(network, 1, seq_len)
    weights = parameter_bytes(network)
    trainable = [p for p in network.parameters() if p.requires_grad]
    largest = max(p.numel() * p.element_size() for p in trainable)
    gradients = {False: parameter_bytes(network, trainable_only=True), True: largest}
    step_temporaries = 2 * largest  # an Adam step's per-tensor temporaries (its direction, √V)
    states = {bits: states_after_a_step(network, replace(optim, state_bits=bits)) for bits in
              ((32,) if optim.name == "sgd" else (32, 8))}
    vocab = lm_head_vocabulary(network)
    activations: dict[tuple, tuple[int, int]] = {}
    estimates = []
    for parts, parts_optim in candidates(memory, optim):
        key = (parts.sampling, parts.checkpointing, parts.lean, parts.chunked_loss)
        if key not in activations:
            activations[key] = _activation_bytes(network, one, parts)
        saved, _ = activations[key]
        chunked = parts.lean or parts.chunked_loss
        head = 3 * min(2**22, batch_size * seq_len * vocab) * 4 if chunked else 2 * batch_size * seq_len * vocab * 4
        rerun = 0
        if parts.checkpointing:
            unwrapped = (parts.sampling, None, parts.lean, parts.chunked_loss)
            if unwrapped not in activations:
                activations[unwrapped] = _activation_bytes(network, one, replace(parts, checkpointing=None))
            rerun = activations[unwrapped][1] * batch_size
        estimates.append(Estimate(parts, parts_optim, weights, gradients[parts_optim.step_in_backward],
                                  states[parts_optim.state_bits], saved * batch_size,
                                  head + rerun + step_temporaries, _time(parts, parts_optim)))
    estimates.sort(key=lambda e: (e.time, len(parts_on(e.memory, e.optim)), e.total))
    fitting = [e for e in estimates if e.total <= budget * (1 - margin)]
    if not fitting:
        smallest = min(estimates, key=lambda e: e.total)
        parts = describe_parts(smallest.memory, smallest.optim)
        raise ValueError(f"no combination fits {budget / MIB:,.0f} MiB (with {margin:.0%} kept free): the smallest "
                         f"estimate is {smallest.total / MIB:,.0f} MiB ({parts}); raise the budget, use LoRA or a "
                         "low-rank optimizer, or a smaller batch")
    return Plan(budget, margin, estimates, fitting[0].memory, fitting[0].optim)
