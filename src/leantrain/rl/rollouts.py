"""Rollouts for RL with verifiable rewards: prompts to token ids, then completions sampled from an HF causal LM.

``generate_rollouts`` samples ``counts[i]`` completions of prompt ``i``: groups of any sizes, as GRPO
samples G completions per prompt (DeepSeekMath §4.1; TRL's ``num_generations``) and DARS gives hard
prompts more (Yang et al. 2025); a greedy pass (``temperature=0``) is SELF's pre-pass (Nguyen et al.
2025). Rows are generated ``batch_size`` at a time with left padding and the KV cache, each stops at its
first end-of-sequence token or after ``max_new_tokens``. The rollout engine (rl/rollout_engine.py) prefills
each prompt once for its group and drops rows as they end; ``engine="hf"`` runs ``model.generate`` on the
rows instead, for comparison. ``dtype="bf16"`` generates with a bf16 copy of the weights (LoRA merged), made
at each call so it follows every update; a model whose weights are already bf16 is used as it is.

Sampling draws from the global torch RNG of the model's device, as ``model.generate`` does: seed it
(``torch.manual_seed``) or fork it (``torch.random.fork_rng``) around the call to reproduce rollouts;
the same seed, prompts, counts and ``batch_size`` give the same tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leantrain.fp32_matmuls import bf16_matmul_is_native
from leantrain.generation.continuations import Decoding
from leantrain.names import ROLLOUT_DTYPES, ROLLOUT_ENGINES
from leantrain.rl.rollout_engine import left_padded, sample_groups
from leantrain.validation import is_positive_int

# Generation settings that reshape the sampled distribution, at their neutral values. ``generate`` fills
# every setting not passed from the model's own ``generation_config`` (an instruct model may ship a
# repetition penalty), and the policy's log-probs score plain softmax(logits / temperature) samples.
# (``min_new_tokens=0`` also overrides a ``min_length``.)
_NEUTRAL = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
            "encoder_no_repeat_ngram_size": 0, "min_new_tokens": 0, "typical_p": 1.0,
            "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "guidance_scale": 1.0, "num_beams": 1,
            "num_return_sequences": 1, "renormalize_logits": False, "remove_invalid_values": False}
# Settings with no neutral value to pass: refused when the model's generation_config sets them.
_REFUSED = ("min_p", "top_h", "sequence_bias", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
            "forced_bos_token_id", "forced_eos_token_id", "exponential_decay_length_penalty", "watermarking_config",
            "stop_strings", "max_time")


def encode_prompts(tokenizer, prompts: Sequence[str | Sequence[Mapping[str, str]]], chat: bool = True
                   ) -> list[list[int]]:
    """Token ids of each prompt. With ``chat``, a string is one user turn and a list of ``{"role", "content"}``
    messages is a conversation; both go through the tokenizer's chat template with the assistant's
    generation prompt appended (the template writes its own special tokens). Without ``chat``, each prompt
    is plain text, tokenized with the tokenizer's special tokens (e.g. BOS)."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of prompts, got {prompts!r}")
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{type(tokenizer).__name__} has no chat_template: pass chat=False to encode plain text, "
                         "or set tokenizer.chat_template")
    encoded = []
    for index, prompt in enumerate(prompts):
        if not chat:
            if not isinstance(prompt, str):
                raise ValueError(f"prompts[{index}] is {type(prompt).__name__}: with chat=False every prompt is a "
                                 "string (chat messages need chat=True)")
            encoded.append(list(tokenizer(prompt)["input_ids"]))
            continue
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        encoded.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return encoded


@dataclass(frozen=True)
class TrainingInputs:
    """The training forward's batch: each row is its prompt then its completion (through its first EOS),
    right-padded, so every real token sits at the position it had during generation (exact for absolute
    position embeddings too). ``logprob_mask`` (B, L − 1) is 1 where ``token_logprobs(model, input_ids,
    attention_mask)`` scores a completion token: the mask for ``policy_loss``. ``sample_logprobs`` (B, L − 1):
    the sampler's log-prob of the token each column scores (0 off the mask), when the rollouts carry them."""

    input_ids: Tensor
    attention_mask: Tensor
    logprob_mask: Tensor
    sample_logprobs: Tensor | None = None

    def rows(self, index: Tensor) -> TrainingInputs:
        """These inputs at the rows ``index`` selects (a boolean mask or indices, in their order)."""
        return TrainingInputs(self.input_ids[index], self.attention_mask[index], self.logprob_mask[index],
                              None if self.sample_logprobs is None else self.sample_logprobs[index])


@dataclass(frozen=True)
class Rollouts:
    """Completions, one row each, on the CPU. ``group``: the prompt index of each row (rows of one prompt
    are consecutive, prompts in order). ``prompt_ids`` / ``prompt_mask`` (B, P): the prompt, left-padded.
    ``completion_ids`` / ``completion_mask`` (B, C): the completion, right-padded with ``pad_token_id``; the
    mask is 1 up to and including the first end-of-sequence token. ``truncated``: no end-of-sequence
    token within ``max_new_tokens`` (the row was cut). ``sample_logprobs`` (B, C): the sampler's log-prob of
    each completion token (0 after the mask), from the rollout engine; None from ``model.generate``."""

    group: Tensor
    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    truncated: Tensor
    pad_token_id: int
    sample_logprobs: Tensor | None = None

    def __len__(self) -> int:
        return len(self.group)

    @property
    def completion_lengths(self) -> Tensor:
        """Generated tokens per row, the end-of-sequence token included."""
        return self.completion_mask.sum(1)

    def training_inputs(self) -> TrainingInputs:
        """Prompt + completion of every row, packed to the left and right-padded (see ``TrainingInputs``)."""
        prompt_lengths = self.prompt_mask.sum(1, keepdim=True)
        ends = prompt_lengths + self.completion_mask.sum(1, keepdim=True)
        length = int(ends.max()) if len(self) else 1
        full = torch.cat([self.prompt_ids, self.completion_ids], dim=1)
        columns = torch.arange(length)
        # column j of a row is column j + (its left padding) of prompt_ids ++ completion_ids
        source = (self.prompt_ids.shape[1] - prompt_lengths + columns).clamp(max=max(full.shape[1] - 1, 0))
        attention_mask = (columns < ends).long()
        input_ids = torch.where(attention_mask.bool(), full.gather(1, source), self.pad_token_id)
        scored = columns[1:]  # logprob column i scores input_ids[:, i + 1]
        logprob_mask = ((scored >= prompt_lengths) & (scored < ends)).long()
        sampled = None
        if self.sample_logprobs is not None:  # gathered as the tokens are, then shifted as the log-probs
            both = torch.cat([torch.zeros(self.prompt_ids.shape), self.sample_logprobs], dim=1)
            sampled = both.gather(1, source)[:, 1:] * logprob_mask
        return TrainingInputs(input_ids=input_ids, attention_mask=attention_mask, logprob_mask=logprob_mask,
                              sample_logprobs=sampled)


def _decoding(temperature: float, top_p: float, top_k: int) -> Decoding:
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0: greedy)")
    if temperature == 0 and (top_p != 1.0 or top_k != 0):
        raise ValueError(f"temperature=0 is greedy, which takes no top_p or top_k; got top_p={top_p!r}, "
                         f"top_k={top_k!r} (leave them at 1.0 and 0)")
    return Decoding(sample=temperature > 0, temperature=temperature or 1.0, top_k=top_k, top_p=top_p)


def _token_ids(name: str, value: int | Sequence[int] | None, default: int | Sequence[int] | None) -> list[int]:
    value = default if value is None else value
    ids = [] if value is None else [value] if isinstance(value, int) else list(value)
    if (value is not None and not ids) or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
        raise ValueError(f"{name}={value!r} must be a token id (an integer >= 0) or a non-empty list of them")
    return ids


def _check(model: nn.Module, prompt_ids: Sequence[Sequence[int]], counts: Sequence[int], max_new_tokens: int,
           batch_size: int) -> None:
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: no prompts to generate from")
    if len(counts) != len(prompt_ids):
        raise ValueError(f"counts has {len(counts)} entries for {len(prompt_ids)} prompts: one count per prompt")
    for index, count in enumerate(counts):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"counts[{index}]={count!r} must be an integer >= 0")
    if not is_positive_int(max_new_tokens):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
    if not is_positive_int(batch_size):
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    positions = getattr(model.config, "max_position_embeddings", None)
    for index, prompt in enumerate(prompt_ids):
        if len(prompt) == 0:
            raise ValueError(f"prompt_ids[{index}] is empty: a prompt needs at least one token")
        if positions is not None and len(prompt) + max_new_tokens > positions:
            raise ValueError(f"prompt_ids[{index}] has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} "
                             f"that exceeds the model's {positions} positions (max_position_embeddings)")
    for name in _REFUSED:
        if getattr(model.generation_config, name, None) is not None:
            raise ValueError(f"model.generation_config.{name}={getattr(model.generation_config, name)!r} would "
                             f"change the rollout distribution; set it to None for rollouts")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for generating (no dropout; gradient checkpointing would turn the KV cache off in training
    mode), then every module's own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _right_padded(chunks: list[Tensor], pad: int) -> Tensor:
    width = max((chunk.shape[1] for chunk in chunks), default=0)
    padded = [nn.functional.pad(chunk, (0, width - chunk.shape[1]), value=pad) for chunk in chunks]
    return torch.cat(padded) if padded else torch.empty((0, 0), dtype=torch.long)


def rollout_dtype(dtype: str, device_type: str, weights: torch.dtype) -> torch.dtype:
    """The torch dtype of ``dtype``; "auto": bf16 where bf16 products are native on ``device_type`` or the
    trained ``weights`` are bf16 already (no copy), else fp32."""
    if dtype not in ROLLOUT_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(ROLLOUT_DTYPES)}")
    if dtype == "auto":
        dtype = "bf16" if bf16_matmul_is_native(device_type) or weights == torch.bfloat16 else "fp32"
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def generation_model(model: nn.Module, dtype: str) -> nn.Module:
    """The model that generates rollouts in ``dtype`` (``rollout_dtype``): ``model`` itself when its weights
    already are that dtype (LoRA adapters stay unmerged: merging them in a copy would cost a second model), else
    a copy in that dtype with the adapters merged into its weights, and with PyTorch's fused attention (SDPA)
    where the model was loaded with eager attention and supports it. A model sharded over processes (FSDP2)
    generates with its own weights: a copy of one shard is not a model."""
    first = next(model.parameters())
    wanted = rollout_dtype(dtype, first.device.type, first.dtype)
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        return model
    if all(p.dtype == wanted for p in model.parameters() if p.is_floating_point()):
        return model
    copy_of = copy.deepcopy(model)
    for module in copy_of.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A"):
            module.merge()
    if getattr(copy_of.config, "_attn_implementation", None) == "eager" and getattr(copy_of, "_supports_sdpa", False):
        copy_of.set_attn_implementation("sdpa")  # one fused kernel, no repeated KV heads: faster decode steps
    return copy_of.to(wanted).requires_grad_(False)


def generate_rollouts(model: nn.Module, prompt_ids: Sequence[Sequence[int]], counts: Sequence[int], *,
                      max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                      batch_size: int = 64, eos_token_id: int | Sequence[int] | None = None,
                      pad_token_id: int | None = None, engine: str = "leantrain", dtype: str = "fp32") -> Rollouts:
    """``counts[i]`` completions of each prompt ``i`` (0 allowed), sampled at ``temperature`` with top-p and
    top-k (1.0 and 0: off, TRL's defaults), or greedy at ``temperature=0``. ``eos_token_id`` (one id or a
    list) and ``pad_token_id`` default to the model's ``generation_config`` (pad: the first EOS id); with no
    EOS id every row runs to ``max_new_tokens``. ``engine``: "leantrain" (rl/rollout_engine.py) or "hf"
    (``model.generate``); ``dtype``: see ``generation_model``. Runs in eval mode, restoring each module's
    mode after."""
    _check(model, prompt_ids, counts, max_new_tokens, batch_size)
    if engine not in ROLLOUT_ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {', '.join(ROLLOUT_ENGINES)}")
    decoding = _decoding(temperature, top_p, top_k)
    eos = _token_ids("eos_token_id", eos_token_id, model.generation_config.eos_token_id)
    pads = _token_ids("pad_token_id", pad_token_id, model.generation_config.pad_token_id) or eos[:1]
    if not pads:
        raise ValueError("pad_token_id=None and the model's generation_config has no pad or EOS token id to pad "
                         "with: pass pad_token_id")
    if len(pads) > 1:
        raise ValueError(f"pad_token_id={pads!r} must be one token id")
    pad = pads[0]
    rows = [index for index, count in enumerate(counts) for _ in range(count)]
    prompts = [list(prompt_ids[index]) for index in rows]
    sample_logprobs = None
    with _eval_mode(model), torch.no_grad():
        generator = generation_model(model, dtype)
        if engine == "hf":
            completion_ids = _generated(generator, prompts, max_new_tokens, decoding, eos, pad, batch_size)
        else:
            sampled = sample_groups(generator, [list(p) for p in prompt_ids], list(counts),
                                    max_new_tokens=max_new_tokens, decoding=decoding, eos=eos, pad=pad,
                                    batch_size=batch_size)
            completion_ids, sample_logprobs = sampled.tokens, sampled.logprobs
    is_eos = torch.isin(completion_ids, torch.tensor(eos, dtype=torch.long))
    completion_mask = ((is_eos.cumsum(1) - is_eos.long()) == 0).long()  # no EOS before this token
    width = int(completion_mask.sum(1).max()) if len(rows) else 0
    completion_ids, completion_mask, is_eos = (t[:, :width] for t in (completion_ids, completion_mask, is_eos))
    if sample_logprobs is not None:
        sample_logprobs = sample_logprobs[:, :width] * completion_mask
    prompt_ids_padded, prompt_mask = left_padded(prompts, pad)
    return Rollouts(group=torch.tensor(rows, dtype=torch.long), prompt_ids=prompt_ids_padded, prompt_mask=prompt_mask,
                    completion_ids=completion_ids.masked_fill(completion_mask == 0, pad),
                    completion_mask=completion_mask, truncated=~is_eos.any(1), pad_token_id=pad,
                    sample_logprobs=sample_logprobs)


def _generated(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, decoding: Decoding, eos: list[int],
               pad: int, batch_size: int) -> Tensor:
    """The completions ``model.generate`` samples for the rows, ``batch_size`` at a time, right-padded."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_padded(prompts[start:start + batch_size], pad)
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   max_new_tokens=max_new_tokens, use_cache=True, eos_token_id=eos or None,
                                   pad_token_id=pad, **_NEUTRAL, **decoding.options())
        chunks.append(generated[:, ids.shape[1]:].cpu())
    return _right_padded(chunks, pad)
