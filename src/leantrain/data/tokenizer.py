"""A byte-level BPE tokenizer trained on the corpus (HF ``tokenizers``), or one from a model folder."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(text: str, vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style) with ``vocab_size`` entries, ``<|endoftext|>`` = id 0."""
    if vocab_size < 257:
        raise ValueError(f"vocab_size must be >= 257 (256 bytes + {END_OF_TEXT}), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return tokenizer


def load_tokenizer(source: str | Path) -> Tokenizer:
    """A ``tokenizer.json`` file, or a model folder holding one."""
    path = Path(source)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {source}")
    return Tokenizer.from_file(str(path))


def cached_tokenizer(cache: Path, text: str, vocab_size: int) -> Tokenizer:
    """The tokenizer saved at ``cache``, or one trained on ``text`` and saved there."""
    if cache.is_file():
        return load_tokenizer(cache)
    tokenizer = train_tokenizer(text, vocab_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_name(cache.name + ".tmp")
    tokenizer.save(str(temporary))
    temporary.replace(cache)
    return tokenizer
