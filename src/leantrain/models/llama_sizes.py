"""Llama-style causal LMs from scratch in the sizes of ``leantrain.names.LLAMA_SIZES``, named by their
parameter count at a 4096-token vocabulary (tied input/output embeddings)."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from leantrain.names import LLAMA_SIZES


def build_llama(size: str, vocab_size: int, max_seq_len: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of ``size`` (a key of ``LLAMA_SIZES``); seed torch first."""
    if size not in LLAMA_SIZES:
        raise ValueError(f"size must be one of {', '.join(LLAMA_SIZES)}, got {size!r}")
    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max_seq_len, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0, **LLAMA_SIZES[size])
    return LlamaForCausalLM(config)
