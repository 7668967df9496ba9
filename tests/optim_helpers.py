"""Shared fixtures for the optimizer tests: small weights, fixed gradient sequences, a tiny Llama."""

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM


def weights(*shapes, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*shape, generator=generator, dtype=torch.float32).to(dtype)) for shape in shapes]


def gradient_sequence(params, steps, seed=1):
    """A fixed list (per step) of gradients, one per parameter."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=generator).to(p.dtype) for p in params] for _ in range(steps)]


def run(optimizer, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config)
