"""``HyperfitConfig``: one hyperfitting run (Carlsson et al., ICLR 2025; recipes/hyperfit.py), torch-free."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from leantrain.config import seeded_sampling
from leantrain.config.engine import EngineConfig
from leantrain.config.fields import check_sections, setting
from leantrain.config.memory import MemoryOptions
from leantrain.config.optim import OptimConfig
from leantrain.validation import require_positive_ints

# Shapes of the run. "paper": the paper's protocol (all parameters, Adam, lr 1e-6, batch 8, 20 epochs over
# 2,000 sequences of 256 tokens). "cpu": 32 sequences of 128 tokens instead (1/125 of the tokens), so that an
# epoch is 4 updates (~35 s for SmolLM2-135M on 2 cores); lr 1e-4 instead of 1e-6 and 12 epochs instead of
# 20, to reach a low training loss in 48 updates, not 5,000; 16 held-out contexts per domain and 128 new
# tokens (TTR still over the last 96), evaluated at the start, halfway and at the end.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"sequences": 2000, "seq_len": 256, "epochs": 20, "lr": 1e-6, "eval_contexts": 32, "new_tokens": 224,
              "eval_every": 1, "eval_batch_size": 8},
    "cpu": {"sequences": 32, "seq_len": 128, "epochs": 12, "lr": 1e-4, "eval_contexts": 16, "new_tokens": 128,
            "eval_every": 6, "eval_batch_size": 16},
}
DOMAINS = ("heldout", "other")  # held-out text of the training corpus; text of ``other_corpus``
SHAPE = ("sequences", "seq_len", "epochs", "eval_contexts", "new_tokens", "eval_every", "eval_batch_size")



@dataclass(frozen=True)
class HyperfitConfig:
    """One hyperfitting run: its own fields, and the ``engine``, ``optim`` and ``memory`` sections. ``model``:
    "smollm2" or a local HF causal-LM folder; ``corpus`` / ``other_corpus``: "bbc", "kjv" or text files
    (``other_corpus`` None: no second domain). The shape fields left None, and ``optim.lr``, come from the
    ``preset`` when the config resolves (``PRESETS``). ``citation_block``: forbid continuing a training span
    after that many tokens at generation time. ``copy_threshold``: copied spans longer than this count as
    copies. ``eval_every``: epochs between evaluations; checkpoints are written at each of them."""

    preset: str = setting("paper", "paper: 2000 x 256 tokens, lr 1e-6; cpu: 32 x 128 tokens, lr 1e-4",
                          choices=tuple(PRESETS))
    model: str = setting("smollm2", '"smollm2" (offline) or a local HF causal-LM folder')
    corpus: str | tuple[str, ...] = setting("bbc", '"bbc", "kjv" or text files')
    other_corpus: str | tuple[str, ...] | None = setting("kjv", 'held-out text of another domain: "bbc", "kjv", '
                                                                'text files or none')
    sequences: int | None = setting(None, "training sequences (none: the preset's, paper 2000, cpu 32)")
    seq_len: int | None = setting(None, "tokens per sequence (paper 256, cpu 128)")
    batch_size: int = setting(8, "sequences per update, over all processes")
    epochs: int | None = setting(None, "passes over the sequences (paper 20, cpu 12)")
    eval_every: int | None = setting(None, "epochs between evaluations and checkpoints (paper 1, cpu 6)")
    eval_contexts: int | None = setting(None, "held-out contexts per domain (paper 32, cpu 16)")
    eval_batch_size: int | None = setting(None, "contexts per generation batch (paper 8, cpu 16)")
    context_len: int = setting(32, "context tokens")
    new_tokens: int | None = setting(None, "tokens generated per context (paper 224, cpu 128)")
    ttr_window: int = setting(96, "TTR over the last N generated tokens")
    top_p: float = setting(0.9, "the sampling baseline's top-p")
    temperature: float = setting(0.7, "the sampling baseline's temperature")
    top_k: int = setting(50, "the sampling baseline's top-k")
    citation_block: int | None = setting(None, "forbid continuing a training span after M tokens (none: off)")
    copy_threshold: int = setting(10, "copies: spans longer than this")
    samples: int = setting(4, "continuations per domain written to samples.jsonl")
    entropy_control: bool = setting(True, "also sample the starting model at the hyperfitted entropy")
    engine: EngineConfig = setting(factory=lambda: EngineConfig(output_dir="runs/hyperfit"))
    optim: OptimConfig = setting(factory=OptimConfig)
    memory: MemoryOptions = setting(factory=MemoryOptions)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"HyperfitConfig.preset={self.preset!r} is not one of {', '.join(PRESETS)}")
        require_positive_ints(self, "batch_size", "context_len", "ttr_window", "top_k", "copy_threshold", "samples")
        require_positive_ints(self, *SHAPE, "citation_block", optional=True)
        check_sections(self)
        shape = {**{name: getattr(self, name) for name in SHAPE}, **self.derived()}
        if shape["sequences"] < self.batch_size:
            raise ValueError(f"HyperfitConfig.sequences={shape['sequences']} must be >= batch_size={self.batch_size} "
                             "(an epoch is sequences // batch_size updates)")
        if self.context_len >= shape["seq_len"]:
            raise ValueError(f"HyperfitConfig.context_len={self.context_len} must be shorter than "
                             f"seq_len={shape['seq_len']} (contexts are the first tokens of held-out sequences)")
        if self.ttr_window > shape["new_tokens"]:
            raise ValueError(f"HyperfitConfig.ttr_window={self.ttr_window} must be <= new_tokens={shape['new_tokens']}")
        if not 0 < self.top_p <= 1 or not self.temperature > 0:
            raise ValueError(f"HyperfitConfig.top_p={self.top_p!r} must be in (0, 1] and temperature="
                             f"{self.temperature!r} > 0")

    def derived(self) -> dict[str, Any]:
        """The preset's value of each shape field left None, and of ``optim.lr``."""
        preset = PRESETS[self.preset]
        values: dict[str, Any] = {name: preset[name] for name in SHAPE if getattr(self, name) is None}
        values.update(seeded_sampling(self))
        if self.optim.lr is None:
            values["optim"] = replace(self.optim, lr=preset["lr"])
        return values

    def resolved(self) -> HyperfitConfig:
        """This config with every derived field filled in (what a run records in config.json)."""
        return replace(self, **self.derived())

    @property
    def steps_per_epoch(self) -> int:
        return self.resolved().sequences // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.resolved().epochs * self.steps_per_epoch


