"""A tiny random Llama saved as an HF folder with a BPE tokenizer trained on BBC text and a chat
template: the stand-in for SmolLM2 in the recipe tests."""

from __future__ import annotations

from pathlib import Path

import torch

from leantrain.data.corpus import bbc_text
from leantrain.data.tokenizer import END_OF_TEXT, train_tokenizer

# Role markers, so that a conversation's prefix renders as the start of the whole (the answer mask needs it).
ROLE_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def tiny_lm(folder: Path, template: str, context: int = 96):
    """(model, tokenizer), also saved in ``folder``: 2 layers of width 32, a 400-token vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = train_tokenizer(bbc_text()[:100_000], 400)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT)
    fast.chat_template = template
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=context, eos_token_id=0))
    model.save_pretrained(folder)
    return model, fast


def tiny_llama():
    """A 1-layer Llama of width 16 over 32 tokens, seeded: the engine tests' model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, use_cache=False))


def seeded_batch(update: int) -> dict[str, torch.Tensor]:
    """Update ``update``'s batch for ``tiny_llama``: 2 rows of 8 tokens, labels = inputs."""
    ids = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(update))
    return {"input_ids": ids, "labels": ids}
