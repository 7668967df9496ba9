"""Fixed-length continuations of equal-length contexts from an HF causal LM (KV cache on).

Every continuation has exactly ``new_tokens`` tokens (end-of-sequence is suppressed until then),
as in the Hyperfitting evaluation, which measures the last 96 of them; and every process of a
sharded model runs the same number of forward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leantrain.validation import is_positive_int


@dataclass(frozen=True)
class Decoding:
    """Greedy (``sample=False``) or sampling with temperature, top-k (0: off) and top-p (1: off). The
    Hyperfitting paper's baseline is top-p 0.9, temperature 0.7, top-k 50."""

    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} must be an integer >= 0 (0: off)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1] (1: off)")

    def options(self) -> dict:
        if not self.sample:
            return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        return {"do_sample": True, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}


def continue_contexts(model: nn.Module, contexts: Tensor, new_tokens: int, decoding: Decoding = Decoding(),
                      batch_size: int = 16, logits_processor: Callable[[Tensor, Tensor], Tensor] | None = None
                      ) -> Tensor:
    """(N, C) context ids -> (N, ``new_tokens``) continuation ids, ``batch_size`` contexts at a time."""
    from transformers import LogitsProcessorList

    if not is_positive_int(new_tokens):
        raise ValueError(f"new_tokens={new_tokens!r} must be an integer >= 1")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and contexts.shape[1] + new_tokens > positions:
        raise ValueError(f"context {contexts.shape[1]} + {new_tokens} new tokens exceed the model's context of "
                         f"{positions} positions")
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else (eos[0] if isinstance(eos, list) else eos)
    processors = LogitsProcessorList([logits_processor] if logits_processor is not None else [])
    outputs = []
    for batch in contexts.split(batch_size):
        batch = batch.to(device)
        generated = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, use_cache=True, pad_token_id=pad,
                                   logits_processor=processors, **decoding.options())
        outputs.append(generated[:, batch.shape[1]:].cpu())
    return torch.cat(outputs)
