"""Llama-style causal LMs from scratch in a few sizes, named by their parameter count at a
4096-token vocabulary (tied input/output embeddings)."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

LLAMA_SIZES: dict[str, dict[str, int]] = {
    "1m": {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 352},
    "5m": {"hidden_size": 256, "num_hidden_layers": 5, "num_attention_heads": 4, "intermediate_size": 688},
    "15m": {"hidden_size": 384, "num_hidden_layers": 8, "num_attention_heads": 6, "intermediate_size": 1024},
    "30m": {"hidden_size": 512, "num_hidden_layers": 9, "num_attention_heads": 8, "intermediate_size": 1376},
    "60m": {"hidden_size": 640, "num_hidden_layers": 11, "num_attention_heads": 10, "intermediate_size": 1728},
}


def build_llama(size: str, vocab_size: int, max_seq_len: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of ``size`` (a key of ``LLAMA_SIZES``); seed torch first."""
    if size not in LLAMA_SIZES:
        raise ValueError(f"size must be one of {', '.join(LLAMA_SIZES)}, got {size!r}")
    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max_seq_len, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0, **LLAMA_SIZES[size])
    return LlamaForCausalLM(config)
