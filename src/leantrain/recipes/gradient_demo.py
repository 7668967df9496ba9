"""A few fine-tuning steps of MiniLM-L6 on BBC News with WTA-CRS gradients, checked against exact ones.

Each step runs the same batch twice at the same parameters and with the same dropout masks: once
with exact gradients, once with sampled ones. It reports the sampled weight gradient's relative
error and cosine to the exact one over the converted layers, then steps AdamW with the sampled
gradient. It also counts the bytes one forward pass keeps for backward, exact vs sampled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from leantrain.data.bbc import LABELS, load_bbc_news, split
from leantrain.memory import saved_tensor_bytes
from leantrain.models.pretrained import minilm_path
from leantrain.sampling import SamplingConfig, apply_sampling, exact_gradients, sampled_layers


@dataclass(frozen=True)
class StepComparison:
    step: int
    loss_exact: float
    loss_sampled: float
    relative_error: float
    cosine: float


@dataclass(frozen=True)
class DemoResult:
    converted_layers: list[str]
    steps: list[StepComparison]
    saved_bytes_exact: int
    saved_bytes_sampled: int
    layer_bytes_exact: int
    layer_bytes_sampled: int


def _converted_weight_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([layer.weight.grad.flatten() for layer in sampled_layers(model).values()])


def run_gradient_demo(
    config: SamplingConfig,
    steps: int = 4,
    batch_size: int = 8,
    seq_len: int = 128,
    lr: float = 5e-5,
    seed: int = 0,
    on_step: Callable[[StepComparison], None] | None = None,
) -> DemoResult:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    if steps < 1 or batch_size < 1 or seq_len < 1:
        raise ValueError(f"steps={steps}, batch_size={batch_size}, seq_len={seq_len}: each must be >= 1")
    logging.set_verbosity_error()  # the fresh classifier head is expected; don't warn about it
    logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=len(LABELS))
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    names = list(apply_sampling(model, config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    train, _ = split(load_bbc_news(), seed=seed)
    model.train()

    def batch(step: int) -> dict[str, torch.Tensor]:
        chunk = train[step * batch_size:(step + 1) * batch_size]
        encoded = tokenizer([e.text for e in chunk], truncation=True, max_length=seq_len,
                            padding="max_length", return_tensors="pt")
        return {**encoded, "labels": torch.tensor([e.label for e in chunk])}

    def loss_and_grads(inputs: dict[str, torch.Tensor], step: int) -> tuple[float, torch.Tensor]:
        optimizer.zero_grad()
        torch.manual_seed(seed * 100_003 + step)  # the same dropout masks for both passes
        loss = model(**inputs).loss
        loss.backward()
        return loss.item(), _converted_weight_grads(model)

    results = []
    for step in range(steps):
        inputs = batch(step)
        with exact_gradients(model):
            loss_exact, exact = loss_and_grads(inputs, step)
        loss_sampled, sampled = loss_and_grads(inputs, step)
        optimizer.step()
        comparison = StepComparison(
            step=step,
            loss_exact=loss_exact,
            loss_sampled=loss_sampled,
            relative_error=((sampled - exact).norm() / exact.norm()).item(),
            cosine=torch.nn.functional.cosine_similarity(sampled, exact, dim=0).item(),
        )
        results.append(comparison)
        if on_step is not None:
            on_step(comparison)

    inputs = batch(0)
    with exact_gradients(model):
        exact_bytes = saved_tensor_bytes(model, inputs)
    sampled_bytes = saved_tensor_bytes(model, inputs)
    return DemoResult(
        converted_layers=names,
        steps=results,
        saved_bytes_exact=exact_bytes.total,
        saved_bytes_sampled=sampled_bytes.total,
        layer_bytes_exact=sum(exact_bytes.by_name.get(n, 0) for n in names),
        layer_bytes_sampled=sum(sampled_bytes.by_name.get(n, 0) for n in names),
    )
