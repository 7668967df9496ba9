"""Tiny HF causal LMs whose logits are not just ``lm_head(hidden)``: Gemma 2 soft-caps them, Cohere multiplies
them by ``logit_scale``, Granite divides them by ``logits_scaling``. Random weights, a 64-token vocabulary."""

import torch
from torch import nn

LOGIT_MODELS = ("gemma2", "cohere", "granite")


def logit_model(kind: str, seed: int = 0) -> nn.Module:
    from transformers import (
        CohereConfig,
        CohereForCausalLM,
        Gemma2Config,
        Gemma2ForCausalLM,
        GraniteConfig,
        GraniteForCausalLM,
    )

    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, attn_implementation="eager")
    torch.manual_seed(seed)
    if kind == "gemma2":
        return Gemma2ForCausalLM(Gemma2Config(**shape, head_dim=8, final_logit_softcapping=3.0))
    if kind == "cohere":
        return CohereForCausalLM(CohereConfig(**shape, logit_scale=0.3))
    if kind == "granite":
        return GraniteForCausalLM(GraniteConfig(**shape, logits_scaling=4.0))
    raise ValueError(f"kind={kind!r} is not one of {', '.join(LOGIT_MODELS)}")
