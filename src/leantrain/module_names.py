"""Choosing layers: one selector vocabulary for ``apply_lora``, ``apply_sampling``, ``apply_lean`` and
``optim.param_groups``.

A selector is ``targets`` (a preset name or a list of module-name patterns) and/or a torchao-style
``filter_fn(module, name) -> bool``; given both, a module must pass both.

Presets (``leantrain.names.TARGET_PRESETS``) choose linear layers (``nn.Linear``, HF GPT-2 ``Conv1D``,
or a stand-in for one that shares its weight, such as leantrain's ``SampledLinear``), and mean the
same thing everywhere:

- ``"paper"``: the layers the released WTA-CRS runs sampled, the attention output projection and both
  FFN matrices of each block (q, k, v stay exact), one name table per model family
  (``PAPER_SUFFIXES``); on a model with PEFT LoRA adapters, every LoRA A matrix instead.
- ``"all-linear"``: every linear layer whose weight trains, except the output layer: the output
  embedding (LM head) and a classification head (``TASK_HEADS``). PEFT's "all-linear" leaves out
  the same output layers.

A pattern matches a name it equals, a dotted suffix of the name (``"mlp.down_proj"`` matches
``"model.layers.0.mlp.down_proj"``), or a regular expression matching the whole name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from leantrain.names import TARGET_PRESETS

FilterFn = Callable[[nn.Module, str], bool]
Targets = str | Sequence[str]

# Top-level names of the classification heads of HF models (…ForSequenceClassification: BERT and
# RoBERTa's "classifier", Llama, GPT-2 and Mistral's "score"). They train in full under LoRA and
# are not a low-rank optimizer's matrices.
TASK_HEADS = ("classifier", "score")

# The "paper" preset: attention output projection and both FFN matrices, one suffix per model family.
PAPER_SUFFIXES = (
    r"attention\.output\.dense", r"intermediate\.dense", r"layer\.\d+\.output\.dense",  # BERT, RoBERTa
    r"attn\.c_proj", r"mlp\.c_fc", r"mlp\.c_proj",  # GPT-2
    r"self_attn\.o_proj", r"mlp\.gate_proj", r"mlp\.up_proj", r"mlp\.down_proj",  # Llama, Mistral, Qwen
    r"SelfAttention\.o", r"EncDecAttention\.o", r"DenseReluDense\.w[io](_[01])?",  # T5
    r"self_attn\.out_proj", r"encoder_attn\.out_proj", r"fc1", r"fc2",  # OPT, BART
    r"attention\.out_lin", r"ffn\.lin1", r"ffn\.lin2",  # DistilBERT
)
_PAPER = re.compile(r"(^|\.)(" + "|".join(PAPER_SUFFIXES) + r")$")
_LORA_A = re.compile(r"(^|\.)lora_A\.[^.]+$")


def name_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A predicate true for names any of ``patterns`` matches; bad patterns raise ValueError."""
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"targets: pattern {pattern!r} must be a non-empty string")
        try:
            compiled.append((pattern, re.compile(pattern)))
        except re.error as error:
            raise ValueError(f"targets: pattern {pattern!r} is not a valid regular expression: {error}") from None
    return lambda name: any(name == p or name.endswith("." + p) or rx.fullmatch(name) for p, rx in compiled)


def linear_weight(module: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """(W as out×in, b) such that ``module(x) == F.linear(x, W, b)``, for ``nn.Linear``, HF's ``Conv1D``
    (exact types, not subclasses) and stand-ins that keep one of them as ``.base`` and register its
    weight and bias as their own (leantrain's ``SampledLinear``); None for anything else (e.g. a LoRA
    layer, whose output has more terms). The weight is read from ``module`` itself: under FSDP2 its
    registered parameters, not ``base``'s, are the ones unsharded in its forward."""
    base = module.__dict__.get("base", module)
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if type(base) is nn.Linear:
        return weight, bias
    if type(base).__name__ == "Conv1D" and type(base).__module__.startswith("transformers."):
        return weight.t(), bias
    return None


def is_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a linear layer in the sense of the presets (see ``linear_weight``)."""
    return linear_weight(module) is not None


def module_filter(model: nn.Module, targets: Targets | None = None, filter_fn: FilterFn | None = None) -> FilterFn:
    """``targets`` (a preset or name patterns; None: no restriction) and ``filter_fn`` as one predicate
    ``(module, name) -> bool`` over ``model``'s modules; a bad selector raises ValueError."""
    if filter_fn is not None and not callable(filter_fn):
        raise ValueError(f"filter_fn must be a callable (module, name) -> bool, got {type(filter_fn).__name__}")
    if targets is None:
        chosen: FilterFn = lambda module, name: True  # noqa: E731
    elif isinstance(targets, str):
        chosen = _preset(model, targets)
    else:
        matches = name_matcher(list(targets))
        chosen = lambda module, name: matches(name)  # noqa: E731
    if filter_fn is None:
        return chosen
    return lambda module, name: chosen(module, name) and bool(filter_fn(module, name))


def _preset(model: nn.Module, preset: str) -> FilterFn:
    if preset not in TARGET_PRESETS:
        raise ValueError(f"targets={preset!r} is not a preset {TARGET_PRESETS}; pass a list of name patterns instead")
    if preset == "all-linear":
        output = getattr(model, "get_output_embeddings", lambda: None)()
        return lambda module, name: (is_linear(module) and module.weight.requires_grad and module is not output
                                     and name.split(".")[0] not in TASK_HEADS)
    if any(_LORA_A.search(name) and is_linear(module) for name, module in model.named_modules()):
        return lambda module, name: is_linear(module) and bool(_LORA_A.search(name))
    return lambda module, name: is_linear(module) and bool(_PAPER.search(name))


def find_targets(model: nn.Module, targets: Targets | None = "paper", filter_fn: FilterFn | None = None) -> list[str]:
    """Names of ``model``'s linear layers (``is_linear``) that the selector chooses, in module order;
    ValueError when it chooses none."""
    select = module_filter(model, targets, filter_fn)
    linear = [(name, module) for name, module in model.named_modules() if name and is_linear(module)]
    chosen = [name for name, module in linear if select(module, name)]
    if not chosen:
        sample = ", ".join(name for name, _ in linear[:6]) or "none"
        raise ValueError(
            f"targets={targets!r}{' with filter_fn' if filter_fn else ''} matched no linear layer in "
            f"{type(model).__name__} (its linear layers include: {sample})"
        )
    return chosen


_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


@dataclass(frozen=True)
class LastLayers:
    """A picklable ``filter_fn`` choosing modules inside the last ``count`` of ``total`` numbered
    blocks (``model.layers.<i>.…``, GPT-2's ``transformer.h.<i>.…``): e.g. LoRA on the last 5 layers."""

    count: int
    total: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 1 <= self.count <= self.total:
            raise ValueError(f"last layers count={self.count!r} must be an integer in [1, {self.total}] "
                             f"(the model has {self.total} layers)")

    def __call__(self, module: nn.Module, name: str) -> bool:
        found = _BLOCK_INDEX.search(name)
        return found is not None and int(found.group(1)) >= self.total - self.count
