"""What a HF causal LM does to ``lm_head(hidden)`` before its loss or its log-probs, so that the chunked heads
(lm_loss.py, token_logprobs.py) compute what the stock forward would.

- Cohere multiplies the logits by ``config.logit_scale``; Granite divides them by ``config.logits_scaling``.
- Gemma 2 and 3 soft-cap them at ``config.final_logit_softcapping``: z ↦ c · tanh(z / c).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LogitTransform:
    """logits = softcap(scale · raw), softcap(z) = c · tanh(z / c) (none when ``softcap`` is None)."""

    scale: float = 1.0
    softcap: float | None = None

    def __call__(self, raw: Tensor) -> Tensor:
        logits = raw * self.scale if self.scale != 1.0 else raw
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap is not None else logits

    def derivative(self, logits: Tensor) -> Tensor | float:
        """∂ logits / ∂ raw, elementwise, from the transformed ``logits``: scale · (1 − (logits / c)²)."""
        if self.softcap is None:
            return self.scale
        return (1 - (logits / self.softcap).square()) * self.scale


IDENTITY = LogitTransform()  # logits = lm_head(hidden), as most models have them


def _class(module: nn.Module) -> type:
    """The module's own class: under FSDP2, ``fully_shard`` swaps in a subclass named ``FSDP<class>``."""
    from torch.distributed.fsdp import FSDPModule

    return type(module).__mro__[2] if isinstance(module, FSDPModule) else type(module)


def logit_transform(model: nn.Module) -> LogitTransform | None:
    """The transform of a HF causal LM whose logits come from a linear head (``lm_head(hidden)``, then the
    transform); None for any other model (no causal-LM class, no linear head)."""
    if not _class(model).__name__.endswith(("ForCausalLM", "LMHeadModel")) or model.base_model is model:
        return None
    if _class(model.get_output_embeddings()) is not nn.Linear:
        return None
    config = model.config
    scale = getattr(config, "logit_scale", None)
    scaling = getattr(config, "logits_scaling", None)
    return LogitTransform(scale=(1.0 if scale is None else float(scale)) / (1.0 if scaling is None else float(scaling)),
                          softcap=getattr(config, "final_logit_softcapping", None))
