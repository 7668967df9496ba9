"""``RLConfig``: one RL-with-verifiable-rewards run (recipes/rl.py), torch-free."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from leantrain.config import seeded_sampling
from leantrain.config.engine import EngineConfig
from leantrain.config.fields import check_sections, from_dict, setting
from leantrain.config.memory import MemoryOptions, optional_choice
from leantrain.config.optim import OptimConfig
from leantrain.names import (
    ADVANTAGE_SCALES,
    POLICY_LOSS_TYPES,
    RL_ALGORITHMS,
    ROLLOUT_DTYPES,
    ROLLOUT_ENGINES,
    TIS_LEVELS,
)
from leantrain.validation import require_count, require_positive_ints

LR = 1e-5  # the policy's learning rate when ``optim.lr`` is None
# The RL step is lean by default with the exact parts: micro-batches of at most MICRO_TOKENS tokens whatever the
# number of rollouts (DARS allocates more to hard prompts), layer checkpointing, and the chunked log-prob head.
# At SmolLM2-135M, 1,024 tokens train as fast as 4,096 and peak 1.1 GiB lower (BENCHMARKS.md).
MICRO_TOKENS = 1024

# What each algorithm changes from GRPO's settings; a field set in RLConfig wins over its entry here.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "grpo": {"collect": "grpo", "scale": "group", "drop_zero_variance": False},
    "dars-et": {"collect": "dars", "dars_rule": "et", "scale": "none", "drop_zero_variance": True},
    "dars-hw": {"collect": "dars", "dars_rule": "hw", "scale": "none", "drop_zero_variance": True},
    "dars-b": {"collect": "dars", "dars_rule": "hw", "scale": "none", "drop_zero_variance": True,
               "breadth": 4, "ppo_epochs": 2},
    "self": {"collect": "self", "scale": "group", "drop_zero_variance": False},
}


@dataclass(frozen=True)
class RLConfig:
    """One RL run: its own fields, and the ``engine``, ``optim`` and ``memory`` sections. Each RL step draws
    ``prompts_per_step`` prompts × ``rollouts`` completions (DARS: round 1) and makes ``ppo_epochs`` updates.
    Fields left None are derived when the config resolves (``resolved``): per algorithm ``prompts_per_step``
    (8, ×4 for dars-b), ``ppo_epochs`` (1, 2 for dars-b), ``scale`` (group; none for DARS, as its released
    runs) and ``max_rollouts`` (DARS's N_max: 4× rollouts for ET, 8× for HW); ``epsilon_high`` =
    ``epsilon_low``; ``eval_problems`` 64, at most ``held_out``; ``engine.save_every`` one RL step;
    ``optim.lr`` 1e-5. The step is lean by default with the exact parts (``MICRO_TOKENS``, layer checkpointing);
    ``--micro-tokens none --checkpointing none`` trains the whole batch at once with stock activations."""

    model: str = setting("smollm2", '"smollm2" (offline) or a local HF causal-LM folder')
    data: str = setting("arithmetic", '"arithmetic" (reasoning-gym chain_sum mix), "rg:TASK" or a .jsonl/.csv of '
                                      "prompt, answer")
    problems: int = setting(2048, "problems per reasoning-gym configuration")
    held_out: int = setting(200, "held-out problems, kept out of training")
    data_seed: int = setting(0, "draws the problems and the held-out split; --seed draws everything else")
    chat: bool = setting(True, "prompts through the tokenizer's chat template (--no-chat: plain text)")
    algo: str = setting("grpo", "grpo; dars-et / dars-hw: DARS's extra rollouts for hard prompts; dars-b: DARS-HW "
                                "with 4x the prompts and 2 full-batch epochs; self: skip prompts the greedy answer "
                                "solves", choices=RL_ALGORITHMS)
    steps: int = setting(20, "RL steps (rollout batches)")
    token_budget: int | None = setting(None, "stop once this many tokens were generated (none: run --steps)")
    prompts_per_step: int | None = setting(None, "prompts per step (none: 8; dars-b 32)")
    rollouts: int = setting(8, "completions per prompt (DARS: round 1), at least 2")
    max_rollouts: int | None = setting(None, "DARS: the most completions a prompt gets (none: 4x --rollouts for ET, "
                                             "8x for HW)")
    ppo_epochs: int | None = setting(None, "updates per rollout batch (none: 1; dars-b 2)")
    max_new_tokens: int = setting(32, "completion length limit")
    temperature: float = setting(1.0, "sampling temperature")
    top_p: float = setting(1.0, "nucleus sampling (1: off)")
    self_refill: bool = setting(False, "self: draw prompts until the step is full")
    generation_batch: int = setting(64, "rows generated at once", aliases=("--rollout-batch",))
    rollout_engine: str = setting("leantrain", "leantrain: each prompt prefilled once for its group, ended rows "
                                               "dropped; hf: model.generate on every row", choices=ROLLOUT_ENGINES)
    rollout_dtype: str = setting("auto", "the weights rollouts are generated with: bf16 (a copy, LoRA merged, "
                                         "unless the trained weights are bf16) or fp32; auto: bf16 where bf16 "
                                         "products are native (GPU, AVX-512-BF16/AMX CPUs) or the weights are bf16",
                                 choices=ROLLOUT_DTYPES)
    tis: str | None = setting(None, "truncated importance sampling of tokens sampled with other weights than the "
                                    "trained ones (bf16 rollouts): token or sequence ratios exp(logp_train - "
                                    "logp_sample), capped at --tis-cap (none: off)", choices=(*TIS_LEVELS, "none"),
                              parse=optional_choice)
    tis_cap: float = setting(3.0, "the cap of the importance ratios (TRL's default)")
    loss_type: str = setting("dapo", "token aggregation of the policy loss", choices=POLICY_LOSS_TYPES)
    scale: str | None = setting(None, "advantage scaling (none: group; none for DARS, as its released runs)",
                                choices=ADVANTAGE_SCALES)
    epsilon_low: float = setting(0.2, "PPO clip range, low side", aliases=("--epsilon",))
    epsilon_high: float | None = setting(None, "clip range, high side (none: --epsilon-low)")
    beta: float = setting(0.0, "KL to the starting model (0: no reference model)")
    entropy_bonus: float = setting(0.0, "entropy coefficient (DARS's runs 0.001)")
    eval_every: int | None = setting(10, "RL steps between held-out evaluations (none: the start and the end)")
    eval_problems: int | None = setting(None, "held-out problems evaluated in the run (none: 64, at most "
                                              "--held-out; 0: none)")
    engine: EngineConfig = setting(factory=lambda: EngineConfig(output_dir="runs/rl", grad_clip=1.0,
                                                                micro_tokens=MICRO_TOKENS))
    optim: OptimConfig = setting(factory=lambda: OptimConfig(lr=LR))
    memory: MemoryOptions = setting(factory=lambda: MemoryOptions(checkpointing="layers"))

    def __post_init__(self) -> None:
        if self.algo not in RL_ALGORITHMS:
            raise ValueError(f"RLConfig.algo={self.algo!r} is not one of {', '.join(RL_ALGORITHMS)}")
        require_positive_ints(self, "problems", "held_out", "steps", "rollouts", "max_new_tokens", "generation_batch")
        require_positive_ints(self, "prompts_per_step", "max_rollouts", "ppo_epochs", "token_budget", "eval_every",
                              optional=True)
        if self.rollouts < 2:
            raise ValueError(f"RLConfig.rollouts={self.rollouts} must be >= 2: a rollout's advantage is its reward "
                             "minus its group's mean, so a group of one never learns (TRL refuses fewer than 2 "
                             "generations too)")
        if self.max_rollouts is not None and self.max_rollouts < self.rollouts:
            raise ValueError(f"RLConfig.max_rollouts={self.max_rollouts} must be >= rollouts={self.rollouts}")
        if self.eval_problems is not None:
            require_count(self, "eval_problems", self.eval_problems, "no evaluation during the run")
            if self.eval_problems > self.held_out:
                raise ValueError(f"RLConfig.eval_problems={self.eval_problems} must be <= held_out={self.held_out}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"RLConfig.temperature={self.temperature!r} must be > 0 (rollouts are sampled)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"RLConfig.top_p={self.top_p!r} must be in (0, 1]")
        if self.rollout_engine not in ROLLOUT_ENGINES:
            raise ValueError(f"RLConfig.rollout_engine={self.rollout_engine!r} is not one of "
                             f"{', '.join(ROLLOUT_ENGINES)}")
        if self.rollout_dtype not in ROLLOUT_DTYPES:
            raise ValueError(f"RLConfig.rollout_dtype={self.rollout_dtype!r} is not one of {', '.join(ROLLOUT_DTYPES)}")
        if self.tis is not None and self.tis not in TIS_LEVELS:
            raise ValueError(f"RLConfig.tis={self.tis!r} is not one of {', '.join(TIS_LEVELS)} or None")
        if not (math.isfinite(self.tis_cap) and self.tis_cap >= 1):
            raise ValueError(f"RLConfig.tis_cap={self.tis_cap!r} must be a finite number >= 1")
        if self.scale is not None and self.scale not in ADVANTAGE_SCALES:
            raise ValueError(f"RLConfig.scale={self.scale!r} is not one of {', '.join(ADVANTAGE_SCALES)}")
        for name in ("beta", "entropy_bonus"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"RLConfig.{name}={getattr(self, name)!r} must be a finite number >= 0")
        check_sections(self)

    @property
    def algorithm(self) -> dict[str, Any]:
        """This algorithm's entry of ``ALGORITHM_DEFAULTS``."""
        return ALGORITHM_DEFAULTS[self.algo]

    def derived(self) -> dict[str, Any]:
        """The values of the fields left None that this config derives (see the class docstring)."""
        rule = self.algorithm.get("dars_rule", "et")
        epochs = self.ppo_epochs or self.algorithm.get("ppo_epochs", 1)
        candidates = {
            "prompts_per_step": 8 * self.algorithm.get("breadth", 1),
            "ppo_epochs": epochs,
            "scale": self.algorithm["scale"],
            "max_rollouts": self.rollouts * (4 if rule == "et" else 8),
            "epsilon_high": self.epsilon_low,
            "eval_problems": min(64, self.held_out),
        }
        values: dict[str, Any] = {name: value for name, value in candidates.items() if getattr(self, name) is None}
        values.update(seeded_sampling(self))
        if self.optim.lr is None:
            values["optim"] = replace(self.optim, lr=LR)
        if self.engine.save_every is None:
            values["engine"] = replace(self.engine, save_every=epochs)  # a checkpoint per RL step
        return values

    def resolved(self) -> RLConfig:
        """This config with every derived field filled in (what a run records in config.json)."""
        return replace(self, **self.derived())

    @classmethod
    def from_file(cls, path: str | Path) -> RLConfig:
        """The config an RL run folder recorded (its config.json)."""
        return from_dict(cls, json.loads(Path(path).read_text()))
