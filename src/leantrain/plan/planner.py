"""The memory planner: the fastest combination of memory parts whose training step fits a budget.

Given a model, a batch shape and a budget in bytes, ``plan_memory`` estimates the total bytes of one
training step (weights, gradients, optimizer states, saved activations and the largest transient
buffers) for every combination of the exact parts — chunked LM-head loss, 8-bit optimizer states, the
optimizer step in backward, layer checkpointing, the lean companions — then with bf16 trained weights
(stochastic rounding: unbiased, not exact), and as a last resort WTA-CRS (approximate weight gradients),
keeping the LoRA of the ``memory`` section and the optimizer of the ``optim`` one. It chooses the fp32
combination with the smallest estimated step time that fits, then a bf16 one, then a sampled one; fewest
parts on a tie; and says why. A part the model refuses (the lean attention of a model with logit
softcapping, say) is left out of the plan, with the reason.

The estimate is leantrain's own accounting (memory/saved_tensors.py) run on a one-example forward of the
converted model, scaled by the batch size (saved activations are linear in it), plus the optimizer's
states after one step. A model given by name or folder is not built whole: two copies of it with one and
two layers (random weights) are measured and every figure is scaled to the model's depth (each layer
holds the same), so a plan needs no more memory than a 2-layer copy and no step of the whole model. One
forward of each copy gives both the saved bytes and the largest layer's. Combinations whose weights alone
(counted on the meta device) exceed the budget are not measured: at SmolLM2-1.7B and 4 GiB, the fp32 ones
(on 2 CPU cores that plan took 174 s before, 44 s now; BENCHMARKS.md). Then the
transients: the logits of the stock LM-head loss (its fp32 copy and its gradient besides the saved
log-softmax, 2 × B·L·V·4 bytes; with the fused loss a chunk's worth and the gradients it keeps), under
checkpointing the rerun of the largest layer, where the device has no bf16 units a 16-bit linear layer's fp32
products (fp32_matmuls.py), and the optimizer step's temporaries (an Adam direction and √V of the largest
weight in fp32; Adafactor's row chunks). The sum is an upper bound: the phases do not all
peak at once. Step times are relative costs measured on this project's CPU benchmarks (``TIME_COST``;
BENCHMARKS.md, "Causal-LM SFT at the memory frontier"), a product over the parts that are on. A ``margin``
(default 10%) is kept free for what the accounting does not see (allocator slack, library workspaces).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from leantrain.config import MemoryOptions, OptimConfig, describe_parts
from leantrain.fp32_matmuls import WIDENED, bf16_matmul_is_native, prefer_fp32_matmuls_
from leantrain.lean import LeanConfig
from leantrain.memory.saved_tensors import saved_tensor_bytes
from leantrain.memory.state_bytes import optimizer_state_bytes, parameter_bytes
from leantrain.optim.rounding import CHUNK
from leantrain.sampling import SamplingConfig

# Relative step time of each part, on top of the others (measured: BENCHMARKS.md, "Causal-LM SFT"; bf16
# weights: their own tier, so their cost only orders bf16 combinations among themselves).
TIME_COST = {"chunked_loss": 1.0, "state_bits": 1.03, "step_in_backward": 1.0, "checkpointing": 1.15,
             "lean": 1.25, "weights": 1.0, "sampling": 1.5}
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
    estimates: list[Estimate]  # the combinations weighed (a tier only if none before it fits), preferred first
    memory: MemoryOptions  # the chosen memory parts, and the optimizer with its chosen state bits / step
    optim: OptimConfig
    refused: dict[str, str] = field(default_factory=dict)  # parts -> why the model refuses them
    skipped: dict[str, int] = field(default_factory=dict)  # "fp32 weights" not measured -> their bytes alone

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
        lines += [f"  refused  {parts}: {reason}" for parts, reason in self.refused.items()]
        lines += [f"  skipped  every combination with {name}: the weights alone take {size / MIB:,.0f} MiB"
                  for name, size in self.skipped.items()]
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
    prefer_fp32_matmuls_(converted)  # as the engine does
    saved = saved_tensor_bytes(converted.train(), batch)
    return saved.total, _layer_peak(saved.by_name)


class Measured:
    """What the planner measures of a model, for one weights dtype: ``of(measure)`` runs ``measure`` on the
    model itself, or on its copies of one and two layers and scales the result to its depth (the copies hold
    the same embedding and head, and each layer the same as every other)."""

    def __init__(self, model: str | nn.Module, dtype: str, memory: MemoryOptions) -> None:
        from leantrain.optim.sixteen_bit import bf16_weights_

        if isinstance(model, nn.Module):
            network = model if dtype == str(next(model.parameters()).dtype).removeprefix("torch.") else \
                bf16_weights_(copy.deepcopy(model))
            self.networks, self.depth = [network], 1
        else:
            self.networks, self.depth = reduced_copies(model, dtype), model_depth(model)
        adapters = MemoryOptions(lora=memory.lora, lora_layers=memory.lora_layers, lora_targets=memory.lora_targets)
        if memory.lora is not None:
            self.networks = [copy.deepcopy(network) for network in self.networks]
            for network in self.networks:
                adapters.apply(network)

    def of(self, measure: Callable[[nn.Module], int]) -> int:
        return self.scaled([measure(network) for network in self.networks])

    def scaled(self, values: list[int]) -> int:
        """The model's figure from its networks' ``values``: the one-layer copy's plus a layer's per extra layer."""
        return values[0] if len(values) == 1 else values[0] + (self.depth - 1) * (values[1] - values[0])

    @property
    def sample(self) -> nn.Module:
        """One of the measured networks (for what every layer count shares: the vocabulary, the largest weight)."""
        return self.networks[0]


def model_depth(name: str) -> int:
    from leantrain.models.presets import meta_model

    return meta_model(name).config.num_hidden_layers


def reduced_copies(name: str, dtype: str) -> list[nn.Module]:
    """``name``'s model with one and with two layers, random weights in ``dtype`` (the planner's measuring copies)."""
    from leantrain.models.presets import build_model

    return [build_model(name, dtype=dtype, layers=layers) for layers in (1, 2)]


def states_after_a_step(model: nn.Module, optim: OptimConfig) -> int:
    """Bytes of ``optim``'s states over a copy of ``model`` after one step on zero gradients."""
    trained = copy.deepcopy(model)
    optimizer = replace(optim, lr=optim.lr or 1e-3).build(trained)  # the states do not depend on it
    for param in trained.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    optimizer.step()
    return optimizer_state_bytes(optimizer)


def output_head(model: nn.Module) -> nn.Module | None:
    """``model``'s LM head (``get_output_embeddings``), or None for a model without one."""
    return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None


def lm_head_vocabulary(model: nn.Module) -> int:
    """The vocabulary of ``model``'s language-model head (its logits are the loss's largest buffers), or 0 for a
    model without one (a classifier's head is small)."""
    head = output_head(model)
    return 0 if head is None else head.weight.shape[0]


def trained_head_numel(model: nn.Module) -> int:
    """Values of ``model``'s LM-head weight if it is trained (its gradient is a full V × d tensor), else 0."""
    head = output_head(model)
    return 0 if head is None or not head.weight.requires_grad else head.weight.numel()


def _fused_head_bytes(model: nn.Module, tokens: int, step_in_backward: bool) -> int:
    """What the fused LM-head loss (lean/lm_loss.py) holds besides the saved activations: two fp32 arrays of a
    chunk's logits (``LeanConfig.lm_loss_chunk_logits`` at most: the logits, turned into their gradient in place,
    and soft-capping's derivative), the hidden states' gradient kept for backward, and, under the step in
    backward, the head's gradient, computed in the forward and held until its update (a tied embedding's own
    dense gradient, the estimate's gradient term, joins it at the end of backward)."""
    head = output_head(model)
    if head is None:
        return 0
    vocab, width = head.weight.shape
    size = head.weight.element_size()
    logits = min(LeanConfig().lm_loss_chunk_logits, tokens * vocab)
    return 2 * logits * 4 + tokens * width * size + (trained_head_numel(model) * size if step_in_backward else 0)


def fp32_product_bytes(model: nn.Module, tokens: int, device: str, fused_head: bool) -> int:
    """What a 16-bit linear layer's products hold in fp32 where ``device`` has no bf16 units (fp32_matmuls.py),
    at its backward over ``tokens`` rows: the output gradient and the input in fp32, an fp32 weight gradient
    and its rounded copy, 4·T·(in + out) + 6·in·out bytes for the largest layer (the LM head's only when the
    fused loss does not compute it). 0 where bf16 products are native or the weights are fp32."""
    if bf16_matmul_is_native(torch.device(device).type):
        return 0
    head = output_head(model) if fused_head else None
    return max((4 * tokens * (m.in_features + m.out_features) + 6 * m.in_features * m.out_features
                for m in model.modules() if isinstance(m, nn.Linear) and m.weight.dtype in WIDENED and m is not head),
               default=0)


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
    """The parts of ``TIME_COST`` that are on (32-bit states and fp32 weights count as off)."""
    values = {"chunked_loss": memory.chunked_loss, "state_bits": optim.state_bits != 32,
              "step_in_backward": optim.step_in_backward, "checkpointing": memory.checkpointing is not None,
              "lean": memory.lean, "weights": optim.weights == "bf16", "sampling": memory.sampling is not None}
    return [part for part in TIME_COST if values[part]]


def _time(memory: MemoryOptions, optim: OptimConfig) -> float:
    time = 1.0
    for part in parts_on(memory, optim):
        time *= TIME_COST[part]
    return time


def tier(memory: MemoryOptions, optim: OptimConfig) -> int:
    """0: exact fp32 training; 1: bf16 weights (unbiased rounding); 2: sampled weight gradients (WTA-CRS)."""
    return 2 if memory.sampling is not None else int(optim.weights == "bf16")


def weight_bytes(model: str | nn.Module, weights: str) -> int:
    """Bytes of ``model``'s parameters stored as ``weights`` ("fp32" or "bf16"), counted on the meta device for a
    name or folder: a floor under every estimate with those weights, known without building anything."""
    from leantrain.models.presets import meta_model

    module = model if isinstance(model, nn.Module) else meta_model(model)
    return sum(param.numel() for param in module.parameters()) * (2 if weights == "bf16" else 4)


def candidates(memory: MemoryOptions, optim: OptimConfig) -> list[tuple[MemoryOptions, OptimConfig]]:
    """Every combination of the parts (module docstring) on top of ``memory``'s LoRA and ``optim``'s optimizer;
    bf16 weights if the optimizer can train them, and always when ``optim`` already asks for them."""
    found = []
    weights = ("bf16",) if optim.weights == "bf16" else ("fp32",) if optim.name == "sgd" else ("fp32", "bf16")
    bits = (32,) if optim.name in ("sgd", "adafactor") else (32, 8)
    for chunked, state_bits, in_backward, layers, lean, sampled, stored in itertools.product(
            (False, True), bits, (False, True), (False, True), (False, True), (False, True), weights):
        if lean and chunked:
            continue  # lean includes the chunked loss
        found.append((replace(memory, chunked_loss=chunked, checkpointing="layers" if layers else None, lean=lean,
                              sampling=SAMPLING if sampled else None),
                      replace(optim, state_bits=state_bits, step_in_backward=in_backward, weights=stored)))
    return found


def _step_temporaries(optim: OptimConfig, largest: int) -> int:
    """Bytes of the optimizer step's temporaries: Adafactor's row chunks; else twice the largest weight's
    numel in fp32 (an Adam direction and √V)."""
    return 4 * CHUNK * 4 if optim.name == "adafactor" else 2 * 4 * largest


class Estimator:
    """The estimate of one training step of ``model`` at ``batch_size`` × ``seq_len`` tokens for any parts
    (module docstring), its measurements shared between the parts that need the same ones. Calling it returns
    the ``Estimate``, or the reason the model refuses those parts."""

    def __init__(self, model: str | nn.Module, batch_size: int, seq_len: int, memory: MemoryOptions,
                 device: str = "cpu") -> None:
        self.model, self.batch_size, self.seq_len, self.adapters = model, batch_size, seq_len, memory
        self.device = device
        self.measured: dict[str, Measured] = {}
        self.activations: dict[tuple, tuple[int, int] | str] = {}
        self.states: dict[tuple, int] = {}

    def network(self, weights: str) -> Measured:
        if weights not in self.measured:
            self.measured[weights] = Measured(self.model, {"fp32": "float32", "bf16": "bfloat16"}[weights],
                                              self.adapters)
        return self.measured[weights]

    def saved(self, network: Measured, weights: str, parts: MemoryOptions) -> tuple[int, int] | str:
        """(saved bytes of a one-example forward, its largest layer's, on the sample network) with ``parts``, or
        why the model refuses them."""
        from leantrain.models.presets import random_batch

        key = (weights, parts.sampling, parts.checkpointing, parts.lean, parts.chunked_loss)
        if key not in self.activations:
            one = random_batch(network.sample, 1, self.seq_len)
            try:  # one forward of each network: the sample's (the first) also gives the largest layer's bytes
                measured = [_activation_bytes(model, one, parts) for model in network.networks]
                self.activations[key] = (network.scaled([total for total, _ in measured]), measured[0][1])
            except ValueError as error:  # a part this model refuses
                self.activations[key] = str(error)
        return self.activations[key]

    def __call__(self, parts: MemoryOptions, optim: OptimConfig) -> Estimate | str:
        network = self.network(optim.weights)
        measured = self.saved(network, optim.weights, parts)
        if parts.checkpointing and not isinstance(measured, str):  # the rerun holds one unwrapped layer
            unwrapped = self.saved(network, optim.weights, replace(parts, checkpointing=None))
            measured = unwrapped if isinstance(unwrapped, str) else (measured[0], unwrapped[1])
        if isinstance(measured, str):
            return measured
        saved, layer = measured
        state_key = (optim.weights, optim.state_bits)
        if state_key not in self.states:
            self.states[state_key] = network.of(lambda m: states_after_a_step(m, optim))
        trainable = [p for p in network.sample.parameters() if p.requires_grad]
        largest = max(p.numel() for p in trainable)
        fused = parts.lean or parts.chunked_loss
        gradients = (largest * trainable[0].element_size() if optim.step_in_backward
                     else network.of(lambda m: parameter_bytes(m, trainable_only=True)))
        tokens = self.batch_size * self.seq_len
        head = (_fused_head_bytes(network.sample, tokens, optim.step_in_backward) if fused
                else 2 * tokens * lm_head_vocabulary(network.sample) * 4)
        rerun = layer * self.batch_size if parts.checkpointing else 0
        products = fp32_product_bytes(network.sample, tokens, self.device, fused)
        return Estimate(parts, optim, network.of(parameter_bytes), gradients, self.states[state_key],
                        saved * self.batch_size, head + rerun + products + _step_temporaries(optim, largest),
                        _time(parts, optim))


def estimate_step(model: str | nn.Module, batch_size: int, seq_len: int, memory: MemoryOptions,
                  optim: OptimConfig, device: str = "cpu") -> Estimate:
    """The planner's estimate of one step with exactly these parts on ``device``; ValueError if the model refuses
    them."""
    estimate = Estimator(model, batch_size, seq_len, memory, device)(memory, optim)
    if isinstance(estimate, str):
        raise ValueError(estimate)
    return estimate


def plan_memory(model: str | nn.Module, batch_size: int, seq_len: int, budget: int,
                memory: MemoryOptions | None = None, optim: OptimConfig | None = None, margin: float = 0.1,
                device: str = "cpu") -> Plan:
    """The plan for ``model`` (a name ``build_model`` knows or an HF folder, measured on reduced copies; or a
    model) at ``batch_size`` × ``seq_len`` tokens within ``budget`` bytes. Raises ValueError naming the smallest
    estimate when nothing fits, and MemoryError when the choice would take more than 90% of the memory
    ``device`` has available (it would not run here)."""
    from leantrain.memory.available import check_fits

    if budget <= 0:
        raise ValueError(f"memory budget={budget!r} must be a positive number of bytes")
    memory, optim = memory or MemoryOptions(), optim or OptimConfig()
    estimator = Estimator(model, batch_size, seq_len, memory, device)
    estimates, refused, fitting = [], {}, []
    options = candidates(memory, optim)
    floors = {weights: weight_bytes(model, weights) for weights in {option[1].weights for option in options}}
    # Combinations whose weights alone exceed the budget are not measured (a 1.7B copy's forwards take minutes)
    skipped = {f"{weights} weights": floor for weights, floor in floors.items() if floor > budget * (1 - margin)}
    options = [option for option in options if f"{option[1].weights} weights" not in skipped]
    if not options:
        raise ValueError(f"no combination fits {budget / MIB:,.0f} MiB (with {margin:.0%} kept free): the weights "
                         f"alone take at least {min(skipped.values()) / MIB:,.0f} MiB; raise the budget")
    for level in sorted({tier(*option) for option in options}):  # a later tier only when nothing earlier fits
        for parts, parts_optim in (option for option in options if tier(*option) == level):
            estimate = estimator(parts, parts_optim)
            if isinstance(estimate, str):
                refused[parts.describe()] = estimate
            else:
                estimates.append(estimate)
        fitting = [e for e in estimates if e.total <= budget * (1 - margin)]
        if fitting:
            break
    if not estimates:
        raise ValueError(f"the model refuses every combination of parts: {refused}")
    estimates.sort(key=lambda e: (tier(e.memory, e.optim), e.time, len(parts_on(e.memory, e.optim)), e.total))
    fitting = [e for e in estimates if e.total <= budget * (1 - margin)]
    if not fitting:
        smallest = min(estimates, key=lambda e: e.total)
        parts = describe_parts(smallest.memory, smallest.optim)
        raise ValueError(f"no combination fits {budget / MIB:,.0f} MiB (with {margin:.0%} kept free): the smallest "
                         f"estimate is {smallest.total / MIB:,.0f} MiB ({parts}); raise the budget, use LoRA, a "
                         "low-rank optimizer or Adafactor (the state floor: --optim adafactor), or a smaller batch")
    chosen = fitting[0]
    check_fits(chosen.total, f"the planned step ({describe_parts(chosen.memory, chosen.optim)})", device)
    return Plan(budget, margin, estimates, chosen.memory, chosen.optim, refused, skipped)
