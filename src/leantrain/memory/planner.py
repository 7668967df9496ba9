"""The memory planner: the fastest combination of memory parts whose training step fits a budget.

Given a model, a batch shape and a budget in bytes, ``plan_memory`` estimates the total bytes of one
training step (weights, gradients, optimizer states, saved activations and the largest transient
buffers) for every combination of the exact parts — chunked LM-head loss, 8-bit optimizer states, the
optimizer step in backward, layer checkpointing, the lean companions — and, as a last resort, WTA-CRS
(approximate weight gradients), keeping the LoRA and optimizer of ``base``. It chooses the combination
with the smallest estimated step time that fits, fewest parts on a tie, and says why.

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
from dataclasses import dataclass, replace

import torch
from torch import nn

from leantrain.memory.options import MemoryOptions
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
    options: MemoryOptions
    weights: int
    gradients: int
    states: int
    activations: int
    transient: int
    time: float

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.states + self.activations + self.transient


@dataclass(frozen=True)
class Plan:
    budget: int
    margin: float
    estimates: list[Estimate]  # every combination, fastest first
    chosen: MemoryOptions

    def fits(self, estimate: Estimate) -> bool:
        return estimate.total <= self.budget * (1 - self.margin)

    def explain(self) -> str:
        """What was chosen and why: the faster combinations that did not fit, and the choice."""
        lines = [f"memory plan for a budget of {self.budget / MIB:,.0f} MiB ({self.margin:.0%} kept free):"]
        for estimate in self.estimates:
            mark = "chosen" if estimate.options == self.chosen else ("fits" if self.fits(estimate) else "too big")
            lines.append(f"  {mark:>7}  {estimate.total / MIB:>9,.0f} MiB  {estimate.time:.2f}x time  "
                         f"{estimate.options.describe()}")
            if estimate.options == self.chosen:
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


def _activation_bytes(model: nn.Module, batch: dict, options: MemoryOptions) -> tuple[int, int]:
    """(saved bytes, largest layer's saved bytes) of one forward of a copy of ``model`` with ``options``."""
    converted = copy.deepcopy(model)
    replace(options, lora=None, lora_layers=None).apply(converted)
    saved = saved_tensor_bytes(converted.train(), batch)
    return saved.total, _layer_peak(saved.by_name)


def _state_bytes(model: nn.Module, options: MemoryOptions) -> int:
    """Bytes of the optimizer's states after one step on zero gradients."""
    from leantrain.optim.factory import build_optimizer

    trained = copy.deepcopy(model)
    optimizer = build_optimizer(options.optimizer, trained, lr=0.0, rank=options.rank, state_bits=options.state_bits)
    for param in trained.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    optimizer.step()
    return optimizer_state_bytes(optimizer)


def parts_on(options: MemoryOptions) -> list[str]:
    """The parts of ``TIME_COST`` that ``options`` turns on (32-bit states count as off)."""
    return [part for part in TIME_COST if getattr(options, part) not in (None, False, 32)]


def _time(options: MemoryOptions) -> float:
    time = 1.0
    for part in parts_on(options):
        time *= TIME_COST[part]
    if options.lean and options.chunked_loss:
        time /= TIME_COST["chunked_loss"]  # lean includes it
    return time


def candidates(base: MemoryOptions) -> list[MemoryOptions]:
    """Every combination of the parts (module docstring) on top of ``base``'s LoRA and optimizer."""
    found = []
    for chunked, bits, in_backward, layers, lean, sampled in itertools.product((False, True), repeat=6):
        if lean and chunked:
            continue  # lean includes the chunked loss
        found.append(replace(base, chunked_loss=chunked, state_bits=8 if bits else 32, step_in_backward=in_backward,
                             checkpointing="layers" if layers else None, lean=lean,
                             sampling=SAMPLING if sampled else None))
    if base.optimizer == "sgd":
        found = [options for options in found if options.state_bits == 32]
    return found


def plan_memory(model: str | nn.Module, batch_size: int, seq_len: int, budget: int,
                base: MemoryOptions | None = None, margin: float = 0.1) -> Plan:
    """The plan for ``model`` (a name ``build_model`` knows, or a model) at ``batch_size`` × ``seq_len``
    tokens within ``budget`` bytes; raises ValueError naming the smallest estimate when nothing fits."""
    from leantrain.models.presets import build_model, random_batch

    if budget <= 0:
        raise ValueError(f"memory budget={budget!r} must be a positive number of bytes")
    base = base or MemoryOptions()
    network = build_model(model) if isinstance(model, str) else model
    if base.lora is not None:
        network = copy.deepcopy(network)
        replace(MemoryOptions(), lora=base.lora, lora_layers=base.lora_layers).apply(network)
    one = random_batch(network, 1, seq_len)
    weights = parameter_bytes(network)
    trainable = [p for p in network.parameters() if p.requires_grad]
    largest = max(p.numel() * p.element_size() for p in trainable)
    gradients = {False: parameter_bytes(network, trainable_only=True), True: largest}
    step_temporaries = 2 * largest  # an Adam step's per-tensor temporaries (its direction, √V)
    states = {bits: _state_bytes(network, replace(base, state_bits=bits)) for bits in
              ((32,) if base.optimizer == "sgd" else (32, 8))}
    vocab = network.config.vocab_size if hasattr(network, "config") else 0
    activations: dict[tuple, tuple[int, int]] = {}
    estimates = []
    for options in candidates(base):
        key = (options.sampling, options.checkpointing, options.lean, options.chunked_loss)
        if key not in activations:
            activations[key] = _activation_bytes(network, one, options)
        saved, _ = activations[key]
        chunked = options.lean or options.chunked_loss
        head = 3 * min(2**22, batch_size * seq_len * vocab) * 4 if chunked else 2 * batch_size * seq_len * vocab * 4
        rerun = 0
        if options.checkpointing:
            unwrapped = (options.sampling, None, options.lean, options.chunked_loss)
            if unwrapped not in activations:
                activations[unwrapped] = _activation_bytes(network, one, replace(options, checkpointing=None))
            rerun = activations[unwrapped][1] * batch_size
        estimates.append(Estimate(options, weights, gradients[options.step_in_backward], states[options.state_bits],
                                  saved * batch_size, head + rerun + step_temporaries, _time(options)))
    estimates.sort(key=lambda e: (e.time, len(parts_on(e.options)), e.total))
    fitting = [e for e in estimates if e.total <= budget * (1 - margin)]
    if not fitting:
        smallest = min(estimates, key=lambda e: e.total)
        raise ValueError(f"no combination fits {budget / MIB:,.0f} MiB (with {margin:.0%} kept free): the smallest "
                         f"estimate is {smallest.total / MIB:,.0f} MiB ({smallest.options.describe()}); raise the "
                         "budget, use LoRA or a low-rank optimizer, or a smaller batch")
    return Plan(budget, margin, estimates, fitting[0].options)
