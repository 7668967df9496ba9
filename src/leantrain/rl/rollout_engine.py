"""The rollout engine behind ``generate_rollouts``: groups of completions, each prompt prefilled once.

GRPO and DARS sample a group of completions per prompt. ``model.generate`` on those rows prefills every
prompt once per row and steps every row until the last one ends. Here (../shared/research/rollouts_cpu.md §3):

- each distinct prompt of a batch is prefilled once, and its KV-cache row repeated for its group
  (``Cache.batch_select_indices`` with a repeating index);
- rows that have ended leave the batch every ``check_every`` tokens: the cache, the mask and the
  positions are compacted, so a long tail costs only the rows still running. That check (with the one that
  the scores held numbers) is the decode loop's only host synchronisation;
- the next token is drawn from ``generate``'s distribution: fp32 scores through temperature, top-k and
  top-p (transformers' warpers, in ``generate``'s order) and softmax; greedy is argmax. So at fp32 greedy
  completions equal ``generate``'s, and sampled ones follow its distribution, drawn by inverting the CDF at
  one uniform per row (generation/draw.py) rather than ``torch.multinomial``'s exponential variate per
  vocabulary entry, which took a fifth of a decode step.

It also returns the sampler's log-probability of each token it drew (of the processed scores, as
transformers' continuous batching reports them): what truncated importance sampling compares with the
trainer's log-probs when the sampler's weights differ from the trainer's (a 16-bit copy).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leantrain.generation.continuations import Decoding
from leantrain.generation.draw import inverse_cdf_draw
from leantrain.validation import is_positive_int

CHECK_EVERY = 4  # decode steps between the checks that drop ended rows


@dataclass(frozen=True)
class Sampled:
    """``tokens`` (B, ``max_new_tokens``): each row's completion, ``pad`` after its first end token;
    ``logprobs``: the sampler's log-probability of each token (0 after the end token)."""

    tokens: Tensor
    logprobs: Tensor


def batches_of_groups(counts: list[int], batch_size: int) -> list[list[tuple[int, int]]]:
    """Batches of (prompt index, copies) holding at most ``batch_size`` rows, prompts in order; a group larger
    than the room left in a batch is split across batches (each part prefills its prompt once)."""
    batches: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    rows = 0
    for prompt, count in enumerate(counts):
        while count:
            take = min(count, batch_size - rows)
            current.append((prompt, take))
            rows, count = rows + take, count - take
            if rows == batch_size:
                batches.append(current)
                current, rows = [], 0
    if current:
        batches.append(current)
    return batches


def _warpers(decoding: Decoding):
    """The score processors ``generate`` applies when sampling, in its order."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    processors = LogitsProcessorList()
    if decoding.sample and decoding.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(decoding.temperature))
    if decoding.sample and decoding.top_k:
        processors.append(TopKLogitsWarper(top_k=decoding.top_k))
    if decoding.sample and decoding.top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=decoding.top_p))
    return processors


class _Forward:
    """The model's forward under the argument names its transformers version takes."""

    def __init__(self, model: nn.Module) -> None:
        names = inspect.signature(model.forward).parameters
        self.model = model
        self.keep = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in names), None)
        self.cache = "cache" if "cache" in names else "past_key_values"  # transformers 5.25 renamed it
        # the last position by index, not logits_to_keep=1: HF slices hidden[:, -1:], whose stride makes the
        # LM head a batched product over a copy of its weight per prompt (B × V × d at the prefill)
        device = next(model.parameters()).device
        last = torch.tensor([-1], device=device) if self.keep == "logits_to_keep" else 1
        self.keep_last = {} if self.keep is None else {self.keep: last}

    def __call__(self, ids: Tensor, mask: Tensor, positions: Tensor, cache=None):
        kwargs = dict(self.keep_last)
        if cache is not None:
            kwargs[self.cache] = cache
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        return out.logits[:, -1].float(), getattr(out, "cache", None) or out.past_key_values


def left_padded(prompts: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    """(ids, mask) of the prompts, left-padded with ``pad`` to the longest."""
    width = max(map(len, prompts), default=0)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def _decode(forward: _Forward, prompts: list[list[int]], copies: list[int], max_new_tokens: int,
            decoding: Decoding, eos: Tensor, pad: int, check_every: int, device: torch.device) -> Sampled:
    ids, mask = (t.to(device) for t in left_padded(prompts, pad))
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)  # as generate's prepare_inputs_for_generation
    logits, cache = forward(ids, mask, positions)
    repeat = torch.repeat_interleave(torch.arange(len(prompts), device=device), torch.tensor(copies, device=device))
    cache.batch_select_indices(repeat)
    logits, mask, position = logits[repeat], mask[repeat], positions[repeat, -1:] + 1
    rows = len(repeat)
    tokens = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=device)
    logprobs = torch.zeros((rows, max_new_tokens), dtype=torch.float32, device=device)
    running = torch.arange(rows, device=device)  # the completion row of each batch row
    ended = torch.zeros(rows, dtype=torch.bool, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)  # every running row's scores held a number so far
    warp = _warpers(decoding)
    for step in range(max_new_tokens):
        scores = warp(None, logits)
        probs = torch.softmax(scores, -1)
        drawn = inverse_cdf_draw(probs) if decoding.sample else scores.argmax(-1)
        logp = probs.gather(1, drawn[:, None])[:, 0].log().masked_fill(ended, 0.0)  # NaN where a score was NaN/inf
        finite &= torch.isfinite(logp).all()
        drawn = drawn.masked_fill(ended, pad)
        tokens[running, step] = drawn
        logprobs[running, step] = logp
        ended |= torch.isin(drawn, eos)
        if step == max_new_tokens - 1:
            break
        if (step + 1) % check_every == 0:
            _check_finite(finite, step)
            keep = (~ended).nonzero()[:, 0]  # the host synchronisation
            if len(keep) == 0:
                break
            if len(keep) < len(ended):
                cache.batch_select_indices(keep)
                mask, position, running, ended, drawn = (t[keep] for t in (mask, position, running, ended, drawn))
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        logits, cache = forward(drawn[:, None], mask, position, cache)
        position = position + 1
    _check_finite(finite, step)
    return Sampled(tokens.cpu(), logprobs.cpu())


def _check_finite(finite: Tensor, step: int) -> None:
    """The error ``torch.multinomial`` would raise: a sampler cannot draw from NaN or infinite scores."""
    if not bool(finite):
        raise ValueError(f"the model's next-token scores hold NaN or inf (by new token {step + 1}): nothing can be "
                         "sampled from them")


def generation_bytes(model: nn.Module, rows: int, length: int, dtype: torch.dtype) -> int:
    """Bytes that generating ``rows`` rows of up to ``length`` tokens holds beyond the trained weights: the KV
    cache twice (compacting builds the new cache before the old one is freed), four fp32 arrays of next-token
    logits (logits, scores, probabilities, log-probabilities), and a copy of the weights when ``dtype`` is not
    theirs (``generation_model``). ``model`` may be on the meta device."""
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = torch.finfo(dtype).bits // 8
    cache = 2 * config.num_hidden_layers * heads * head_dim * length * rows * element
    weights = list(model.parameters())
    copy = 0 if all(p.dtype == dtype for p in weights) else sum(p.numel() for p in weights) * element
    return 2 * cache + 4 * rows * config.vocab_size * 4 + copy


def sample_groups(model: nn.Module, prompt_ids: list[list[int]], counts: list[int], *, max_new_tokens: int,
                  decoding: Decoding, eos: list[int], pad: int, batch_size: int,
                  check_every: int = CHECK_EVERY) -> Sampled:
    """``counts[i]`` completions of prompt ``i`` (rows of a prompt consecutive, prompts in order), at most
    ``batch_size`` rows decoded at once. Call it in eval mode under ``torch.no_grad()``."""
    if not is_positive_int(check_every):
        raise ValueError(f"check_every={check_every!r} must be an integer >= 1")
    device = next(model.parameters()).device
    forward = _Forward(model)
    ends = torch.tensor(eos, dtype=torch.long, device=device)
    parts = []
    for batch in batches_of_groups(counts, batch_size):
        parts.append(_decode(forward, [list(prompt_ids[prompt]) for prompt, _ in batch], [n for _, n in batch],
                             max_new_tokens, decoding, ends, pad, check_every, device))
    if not parts:
        empty = torch.empty((0, max_new_tokens))
        return Sampled(empty.long(), empty)
    return Sampled(torch.cat([p.tokens for p in parts]), torch.cat([p.logprobs for p in parts]))
