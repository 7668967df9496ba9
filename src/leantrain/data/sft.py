"""Supervised fine-tuning examples: TRL's dataset formats, tokenised with a loss mask on the answer.

Formats (TRL's, one per row of a JSONL/CSV file or built in):

- conversational language modelling: ``{"messages": [{"role": ..., "content": ...}, ...]}`` — the loss is
  on the assistant messages (TRL's ``assistant_only_loss=True``);
- prompt-completion: ``{"prompt": ..., "completion": ...}``, both strings (the text is the prompt, the
  completion and the EOS token) or both lists of messages (rendered with the chat template) — the loss
  is on the completion (TRL's ``completion_only_loss``).

Chat text is rendered with the tokenizer's chat template; the answer's characters are found by
rendering the conversation up to each answer with and without it (so they hold for any template whose
renderings of a conversation's prefixes are prefixes of each other, and an error says when not), and a
token carries the loss when its characters overlap an answer's (a BPE token that merges the prompt's
last space with the answer's first letter writes part of the answer, so it is trained). The end-of-turn
token after an answer is trained too, so the model learns to stop.

Built-in sources (``load_sft_problems``): ``"arithmetic"``, the reasoning-gym ``chain_sum`` mix of
``leantrain rl`` (data/problems.py) with worked answers written here from each problem's expression, one
partial sum per line ("4 - 1 = 3", "3 - 7 = -4", "The answer is -4."); ``"rg:TASK"``, any reasoning-gym
task, answered with its own worked solution where it ships one (``gsm_symbolic``'s ``answer_cot``), else
the expression's partial sums (``chain_sum``, ``basic_arithmetic``), else "The answer is X.".
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from leantrain.data.problems import Problems, load_problems
from leantrain.data.rows import read_rows

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "tool")
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Example:
    """One training example: its token ids and which of them carry the loss."""

    ids: list[int]
    trained: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


# -- formats --------------------------------------------------------------------------------------
def _check_messages(messages: Any, where: str) -> Messages:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: messages must be a non-empty list of {{'role', 'content'}} dicts, got "
                         f"{type(messages).__name__}")
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"{where}: message {number} must be a dict with 'role' and 'content', got {message!r}")
        if message["role"] not in ROLES:
            raise ValueError(f"{where}: message {number} has role {message['role']!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise ValueError(f"{where}: message {number}'s content must be a string")
    return [dict(message) for message in messages]


def example_format(row: Mapping[str, Any], where: str) -> str:
    """"messages", "prompt-completion" (strings) or "chat-prompt-completion" (lists of messages)."""
    if "messages" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return "prompt-completion"
        if isinstance(prompt, list) and isinstance(completion, list):
            return "chat-prompt-completion"
        raise ValueError(f"{where}: prompt and completion must be both strings or both lists of messages, got "
                         f"{type(prompt).__name__} and {type(completion).__name__}")
    raise ValueError(f"{where}: unknown format with keys {sorted(row)}; an SFT example has 'messages' "
                     "(a chat), or 'prompt' and 'completion' (TRL's formats)")


def _chat_spans(messages: Messages, trained_from: int, tokenizer, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans of its assistant messages at index >= ``trained_from``."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{where}: a chat example needs a tokenizer with a chat_template; "
                         f"{type(tokenizer).__name__} has none (use plain prompt/completion strings)")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or index < trained_from:
            continue
        before = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[:index + 1], tokenize=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise ValueError(f"{where}: the chat template renders a conversation's prefix differently from the "
                             "start of the whole conversation, so the answer tokens cannot be found")
        spans.append((len(before), len(upto)))
    return text, spans


def encode_example(row: Mapping[str, Any], tokenizer, where: str = "example") -> Example:
    """Token ids of ``row`` (any format above) and the mask of the tokens that carry the loss."""
    kind = example_format(row, where)
    if kind == "prompt-completion":
        text = row["prompt"] + row["completion"] + (tokenizer.eos_token or "")
        spans, special = [(len(row["prompt"]), len(text))], True
    else:
        if kind == "messages":
            messages, trained_from = _check_messages(row["messages"], where), 0
        else:
            prompt = _check_messages(row["prompt"], where)
            messages, trained_from = prompt + _check_messages(row["completion"], where), len(prompt)
        text, spans = _chat_spans(messages, trained_from, tokenizer, where)
        special = False  # the template writes its own special tokens
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{where}: the answer mask needs a fast tokenizer (character offsets); "
                         f"{type(tokenizer).__name__} is not one")
    encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    trained = [end > begin and any(begin < last and end > first for first, last in spans)
               for begin, end in encoded["offset_mapping"]]
    if not any(trained):
        raise ValueError(f"{where}: no answer tokens to train on (an empty completion, or no assistant message)")
    return Example(list(encoded["input_ids"]), trained)


def encode_examples(rows: Sequence[Mapping[str, Any]], tokenizer, max_length: int, name: str) -> list[Example]:
    """Every row encoded; a row longer than ``max_length`` tokens is an error that names it."""
    examples = []
    for number, row in enumerate(rows, start=1):
        example = encode_example(row, tokenizer, f"{name}: example {number}")
        if len(example) > max_length:
            raise ValueError(f"{name}: example {number} has {len(example)} tokens, more than max_length={max_length}; "
                             "raise max_length (up to the model's context) or shorten the example")
        examples.append(example)
    return examples


# -- sources --------------------------------------------------------------------------------------
def partial_sums(expression: str) -> str:
    """A worked answer for a chain of + and −: one partial sum per line, then the answer."""
    tokens = expression.split()
    total, lines = int(tokens[0]), []
    for operator, operand in zip(tokens[1::2], tokens[2::2], strict=True):
        if operator not in ("+", "-"):
            raise ValueError(f"partial_sums: {expression!r} has operator {operator!r}; only + and - are worked")
        after = total + int(operand) if operator == "+" else total - int(operand)
        lines.append(f"{total} {operator} {operand} = {after}")
        total = after
    return "\n".join([*lines, f"The answer is {total}."])


def worked_answer(answer: str, metadata: Mapping[str, Any]) -> str:
    """The problem's worked solution (see the module docstring for which one)."""
    if metadata.get("answer_cot"):
        return str(metadata["answer_cot"])
    expression = metadata.get("expression")
    if isinstance(expression, str) and set(expression.split()[1::2]) <= {"+", "-"}:
        return partial_sums(expression)
    return f"The answer is {answer}."


def problem_rows(problems: Problems) -> list[dict[str, Any]]:
    """Prompt-completion chat rows of reasoning-gym problems, with their worked answers."""
    rows = []
    for prompt, answer, metadata in zip(problems.prompts, problems.columns["answer"], problems.columns["metadata"],
                                        strict=True):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        rows.append({"prompt": messages, "completion": [{"role": "assistant",
                                                          "content": worked_answer(answer, metadata)}]})
    return rows


@dataclass(frozen=True)
class SFTData:
    """Training and held-out rows; ``held_out_problems``: the held-out problems with their answer checkers
    (reasoning-gym sources), for exact-answer accuracy; None for a file (held-out loss only)."""

    train: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    held_out_problems: Problems | None
    name: str


def load_sft_data(source: str, held_out: int, size: int = 2048, seed: int = 0) -> SFTData:
    """``"arithmetic"``, ``"rg:TASK"`` or a JSONL/CSV file (module docstring), split into training and
    ``held_out`` examples (reasoning-gym sources: by distinct prompt, stratified, as ``leantrain rl``)."""
    if source == "arithmetic" or source.startswith("rg:"):
        train, held = load_problems(source, size, seed).split(held_out, seed)
        return SFTData(problem_rows(train), problem_rows(held), held, source)
    if Path(source).suffix not in (".jsonl", ".csv"):
        raise ValueError(f"SFT data {source!r} must be 'arithmetic', 'rg:TASK' (a reasoning-gym task) or a "
                         ".jsonl/.csv file of messages or prompt/completion rows")
    rows = read_rows(source, "SFT data file")
    if not rows:
        raise ValueError(f"{source} holds no examples")
    if held_out >= len(rows):
        raise ValueError(f"{source}: held_out={held_out} leaves no training examples ({len(rows)} rows)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return SFTData([rows[i] for i in order[held_out:]], [rows[i] for i in order[:held_out]], None, Path(source).name)


# -- batches --------------------------------------------------------------------------------------
def pack(examples: Sequence[Example], max_length: int) -> list[list[Example]]:
    """Whole examples into rows of at most ``max_length`` tokens, first-fit in decreasing length
    (TRL's "bfd" packing, without splitting an example)."""
    rows: list[list[Example]] = []
    room: list[int] = []
    for example in sorted(examples, key=len, reverse=True):
        fit = next((index for index, free in enumerate(room) if free >= len(example)), None)
        if fit is None:
            rows.append([example])
            room.append(max_length - len(example))
        else:
            rows[fit].append(example)
            room[fit] -= len(example)
    return rows


def collate(rows: Sequence[Sequence[Example]], pad_id: int) -> dict[str, Tensor]:
    """A padded batch: ``input_ids``, ``labels`` (-100 off the answers), and either ``attention_mask``
    (one example per row) or ``position_ids`` restarting at each packed example (HF then attends within
    each example only), plus ``answer_tokens``: the batch's answer-token count per row, for the loss."""
    width = max(sum(len(example) for example in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    positions = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        start = 0
        for example in row:
            end = start + len(example)
            ids[index, start:end] = torch.tensor(example.ids)
            labels[index, start:end] = torch.where(torch.tensor(example.trained), ids[index, start:end], IGNORE_INDEX)
            labels[index, start] = IGNORE_INDEX  # HF shifts labels: no example's first token is its own target
            positions[index, start:end] = torch.arange(len(example))
            start = end
        mask[index, :start] = 1
        positions[index, start:] = torch.arange(width - start)  # padding: a segment of its own
    batch = {"input_ids": ids, "labels": labels}
    if any(len(row) > 1 for row in rows):
        batch["position_ids"] = positions
    else:
        batch["attention_mask"] = mask
    # HF shifts labels by one: the first token of a row is never a target
    targets = (labels[:, 1:] != IGNORE_INDEX).sum()
    batch["answer_tokens"] = torch.full((len(rows),), float(targets) / len(rows), dtype=torch.float64)
    return batch
