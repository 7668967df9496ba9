"""RL with verifiable rewards on the one engine: GRPO, DARS (ET, HW, Breadth) and SELF (``leantrain rl``).

Each RL step draws prompts from the training problems, samples completions with the current policy
(rl/collect.py: the algorithm decides how many per prompt), scores them with the problems' reward
functions and trains on the rows with their group advantages: ``ppo_epochs`` engine updates over the
whole rollout batch (DARS-B's full-batch updates, Yang et al. 2025 §2.3; 1 is on-policy GRPO, TRL's
``num_iterations=1``). The loss is TRL's clipped surrogate (rl/training_loss.py) on log-probs from the
chunked head. Sampling is seeded by (seed, RL step) and leaves the training RNG alone; the rollout
buffer, the prompt cursor and the token count live in the engine's checkpoint, so a resumed run
continues the same run. Under several processes each process generates the whole batch from the same
seed (so FSDP2's collectives stay in step) and trains on its share of the rows.

Algorithms (``--algo``): ``grpo``; ``dars-et`` / ``dars-hw`` (DARS's Equal-Treatment / Hardness-Weighted
second round, zero-variance filter, no std scaling, as the released runs); ``dars-b`` (DARS-HW with
large breadth: 4× the prompts per step and 2 full-batch epochs); ``self`` (a greedy pre-pass skips the
prompts the policy already solves, then GRPO). The run folder holds ``config.json``, ``metrics.jsonl``
(one record per update; the first update of each RL step carries its rollout metrics), the engine's
checkpoint and ``summary.md`` / ``summary.json``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from leantrain.convert import Conversion
from leantrain.engine import EngineConfig, TrainTask
from leantrain.engine.state import load_model_state
from leantrain.io import load_checkpoint
from leantrain.names import ADVANTAGE_SCALES, OPTIMIZERS, RL_ALGORITHMS
from leantrain.optim.factory import build_optimizer
from leantrain.recipes.causal_lm import lm_conversions, load_causal_lm, model_folder, open_run
from leantrain.rl.collect import Collector, CollectSettings
from leantrain.rl.problems import Problems, load_problems
from leantrain.rl.rewards import RewardFunction
from leantrain.rl.rollouts import encode_prompts
from leantrain.rl.scoring import answer_accuracy
from leantrain.rl.training_loss import LossSettings, RLLoss, rollout_batch
from leantrain.sampling import SamplingConfig
from leantrain.validation import is_positive_int

# What each algorithm changes from GRPO's settings; an explicit setting in RLConfig wins.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "grpo": {"collect": "grpo", "scale": "group", "drop_zero_variance": False},
    "dars-et": {"collect": "dars", "dars_rule": "et", "scale": "none", "drop_zero_variance": True},
    "dars-hw": {"collect": "dars", "dars_rule": "hw", "scale": "none", "drop_zero_variance": True},
    "dars-b": {"collect": "dars", "dars_rule": "hw", "scale": "none", "drop_zero_variance": True,
               "breadth": 4, "ppo_epochs": 2},
    "self": {"collect": "self", "scale": "group", "drop_zero_variance": False},
}
CONFIG_FILE, SUMMARY_FILE = "config.json", "summary.json"


@dataclass(frozen=True)
class RLConfig:
    """One RL run. ``model``: "smollm2" or a local HF causal-LM folder. ``data``: "arithmetic", "rg:TASK" or a
    JSONL/CSV of prompts and answers (rl/problems.py), ``problems`` per reasoning-gym configuration, of which
    ``held_out`` (distinct prompts) are kept out of training. ``steps``: RL steps (rollout batches), each of
    ``prompts_per_step`` prompts × ``rollouts`` completions (None: 8, ×4 for dars-b) and ``ppo_epochs``
    updates (None: 1, 2 for dars-b); ``token_budget`` ends the run once that many tokens were generated.
    ``scale`` (advantage scaling) and ``max_rollouts`` (DARS's N_max; None: 4N for ET, 8N for HW, the
    released 32 / 64 at N = 8) default per algorithm. ``eval_every``: RL steps between greedy evaluations
    on ``eval_problems`` held-out problems (and at the start and the end; 0 problems: none). ``data_seed``
    draws the problems and their split, ``seed`` everything else (prompt order, sampling, training)."""

    output_dir: str = "runs/rl"
    model: str = "smollm2"
    data: str = "arithmetic"
    problems: int = 2048
    held_out: int = 200
    chat: bool = True
    algo: str = "grpo"
    steps: int = 20
    prompts_per_step: int | None = None
    rollouts: int = 8
    max_rollouts: int | None = None
    ppo_epochs: int | None = None
    token_budget: int | None = None
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    scale: str | None = None
    self_refill: bool = False
    loss_type: str = "dapo"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.0
    entropy_bonus: float = 0.0
    lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    optimizer: str = "adamw"
    rank: int | None = None
    update_proj_gap: int | None = None
    lora: int | None = None
    lora_layers: int | None = None
    sampling: str | None = None
    importance: str = "running"
    lean: bool = False
    precision: str = "fp32"
    layout: str = "ddp"
    grad_accum: int = 1
    generation_batch: int = 64
    eval_every: int | None = 10
    eval_problems: int = 64
    seed: int = 0
    data_seed: int = 0

    def __post_init__(self) -> None:
        if self.algo not in RL_ALGORITHMS:
            raise ValueError(f"RLConfig.algo={self.algo!r} is not one of {', '.join(RL_ALGORITHMS)}")
        for name in ("problems", "held_out", "steps", "rollouts", "max_new_tokens", "grad_accum", "generation_batch"):
            if not is_positive_int(getattr(self, name)):
                raise ValueError(f"RLConfig.{name}={getattr(self, name)!r} must be an integer >= 1")
        for name in ("prompts_per_step", "max_rollouts", "ppo_epochs", "token_budget", "eval_every", "lora",
                     "lora_layers"):
            value = getattr(self, name)
            if value is not None and not is_positive_int(value):
                raise ValueError(f"RLConfig.{name}={value!r} must be None or an integer >= 1")
        if self.max_rollouts is not None and self.max_rollouts < self.rollouts:
            raise ValueError(f"RLConfig.max_rollouts={self.max_rollouts} must be >= rollouts={self.rollouts}")
        if isinstance(self.eval_problems, bool) or not isinstance(self.eval_problems, int) or self.eval_problems < 0:
            raise ValueError(f"RLConfig.eval_problems={self.eval_problems!r} must be an integer >= 0 (0: no evaluation "
                             "during the run)")
        if self.eval_problems > self.held_out:
            raise ValueError(f"RLConfig.eval_problems={self.eval_problems} must be <= held_out={self.held_out}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"RLConfig.temperature={self.temperature!r} must be > 0 (rollouts are sampled)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"RLConfig.top_p={self.top_p!r} must be in (0, 1]")
        if self.scale is not None and self.scale not in ADVANTAGE_SCALES:
            raise ValueError(f"RLConfig.scale={self.scale!r} is not one of {', '.join(ADVANTAGE_SCALES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"RLConfig.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"RLConfig.lr={self.lr!r} must be a finite number > 0")
        if self.lora_layers is not None and self.lora is None:
            raise ValueError("RLConfig.lora_layers needs lora (a LoRA rank)")
        self.loss_settings()
        self.sampling_config()
        self.engine()

    def setting(self, name: str) -> Any:
        """A setting that defaults per algorithm: this config's value, else the algorithm's."""
        value = getattr(self, name, None)
        return ALGORITHM_DEFAULTS[self.algo].get(name) if value is None else value

    @property
    def epochs(self) -> int:
        return self.setting("ppo_epochs") or 1

    @property
    def step_prompts(self) -> int:
        return self.prompts_per_step or 8 * ALGORITHM_DEFAULTS[self.algo].get("breadth", 1)

    def collect_settings(self) -> CollectSettings:
        defaults = ALGORITHM_DEFAULTS[self.algo]
        rule = defaults.get("dars_rule", "et")
        cap = self.max_rollouts or self.rollouts * (4 if rule == "et" else 8)
        return CollectSettings(algorithm=defaults["collect"], prompts=self.step_prompts, rollouts=self.rollouts,
                               max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                               scale=self.setting("scale"), dars_rule=rule, max_rollouts=cap,
                               drop_zero_variance=defaults["drop_zero_variance"], self_refill=self.self_refill,
                               batch_size=self.generation_batch)

    def loss_settings(self) -> LossSettings:
        return LossSettings(loss_type=self.loss_type, epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
                            beta=self.beta, entropy_bonus=self.entropy_bonus, temperature=self.temperature,
                            max_completion_length=self.max_new_tokens)

    def sampling_config(self) -> SamplingConfig | None:
        if self.sampling is None:
            return None
        return SamplingConfig.from_spec(self.sampling, importance=self.importance, seed=self.seed)

    def engine(self, show_progress: bool = True) -> EngineConfig:
        every = None if self.eval_every is None else self.eval_every * self.epochs
        return EngineConfig(max_steps=self.steps * self.epochs, grad_accum=self.grad_accum, grad_clip=self.grad_clip,
                            precision=self.precision, layout=self.layout, eval_every=every, save_every=self.epochs,
                            eval_at_start=True, seed=self.seed, show_progress=show_progress,
                            description=f"rl {self.algo}")

    def conversions(self, num_layers: int) -> tuple[Conversion, ...]:
        """LoRA (all linear layers but the head, or the last ``lora_layers`` blocks), then sampling, then lean."""
        return lm_conversions(self.lora, self.lora_layers, self.sampling_config(), self.lean, num_layers)

    @classmethod
    def from_file(cls, path: str | Path) -> RLConfig:
        known = {field.name for field in fields(cls)}
        return cls(**{k: v for k, v in json.loads(Path(path).read_text()).items() if k in known})


def prepare_problems(config: RLConfig) -> tuple[Problems, Problems]:
    """(training, held-out) problems of ``config``: the same split for every run with the same data and data_seed."""
    return load_problems(config.data, config.problems, config.data_seed).split(config.held_out, config.data_seed)


def prompt_stream(problems: Problems, seed: int) -> Callable[[int], int]:
    """Position → problem index of an endless stream that takes the strata in turn (each reshuffled at every
    pass), so that every step sees the configurations in equal shares."""
    strata: dict[int, list[int]] = {}
    for index, stratum in enumerate(problems.stratum):
        strata.setdefault(stratum, []).append(index)
    members = list(strata.values())

    def stream(position: int) -> int:
        stratum = members[position % len(members)]
        turn, offset = divmod(position // len(members), len(stratum))
        order = list(stratum)
        random.Random(f"{seed}/{position % len(members)}/{turn}").shuffle(order)
        return order[offset]

    return stream


def load_policy(source: str | Path) -> tuple[nn.Module, Any, RLConfig | None]:
    """(model, tokenizer, config) of ``source``: "smollm2", an HF folder (config None) or an RL run folder
    (its starting model with its conversions and the trained parameters of its checkpoint)."""
    run = Path(source)
    if (run / CONFIG_FILE).is_file() and (run / "checkpoint.safetensors").is_file():
        config = RLConfig.from_file(run / CONFIG_FILE)
        model, tokenizer = load_causal_lm(model_folder(config.model))
        for convert in config.conversions(model.config.num_hidden_layers):
            convert(model)
        load_model_state(model, load_checkpoint(run / "checkpoint.safetensors")["model"], sharded=False)
        return model.eval(), tokenizer, config
    model, tokenizer = load_causal_lm(model_folder(str(source)))
    return model.eval(), tokenizer, None


def greedy_accuracy(policy: nn.Module, tokenizer, problems: Problems, prompt_ids: list[list[int]],
                    config: RLConfig) -> dict[str, float]:
    """Accuracy of greedy answers, and of one sample at the rollout temperature (seeded), on ``problems``."""
    return {f"heldout_{name}_accuracy": answer_accuracy(policy, tokenizer, problems, prompt_ids,
                                                         max_new_tokens=config.max_new_tokens, temperature=temperature,
                                                         top_p=config.top_p, batch_size=config.generation_batch,
                                                         seed=config.seed)
            for name, temperature in (("greedy", 0.0), ("sampled", config.temperature))}


class RolloutBuffer:
    """The recipe's state between updates: the current RL step's batch and metrics, the prompt cursor and
    the tokens generated so far (saved in the engine's checkpoint)."""

    def __init__(self) -> None:
        self.rl_step, self.cursor, self.tokens = -1, 0, 0
        self.batch: dict[str, Tensor] | None = None
        self.metrics: dict[str, float] = {}

    def state(self) -> dict[str, Any]:
        return {"rl_step": self.rl_step, "cursor": self.cursor, "tokens": self.tokens, "batch": self.batch,
                "metrics": self.metrics}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.rl_step, self.cursor, self.tokens = state["rl_step"], state["cursor"], state["tokens"]
        self.batch, self.metrics = state["batch"], dict(state["metrics"])


@dataclass
class RLResult:
    config: RLConfig
    records: list[dict]  # the evaluations, step 0 (the starting model) first
    steps: int  # RL steps done
    generated_tokens: int
    train_seconds: float
    eval_seconds: float
    output_dir: Path


def rl(config: RLConfig, resume: bool = False, show_bar: bool = True, on_log: Callable[[dict], None] | None = None,
       problems: tuple[Problems, Problems] | None = None,
       reward_functions: Mapping[str, RewardFunction] | None = None) -> RLResult:
    """Run (or with ``resume`` continue) ``config`` on the engine. ``problems``: (training, held-out) instead of
    ``config.data``; ``reward_functions`` replace the problems' own (TRL's signature)."""
    train, held_out = problems or prepare_problems(config)  # before the run folder: bad data leaves nothing behind
    engine, run_dir, _, model, tokenizer = open_run(config.engine(show_bar), config.output_dir, config.model,
                                                    config.seed, on_log)
    if reward_functions is not None:
        train, held_out = (replace(p, reward_functions=dict(reward_functions)) for p in (train, held_out))
    train_ids = encode_prompts(tokenizer, train.prompts, chat=config.chat)
    evaluated = held_out.subset(range(min(config.eval_problems, len(held_out)))) if config.eval_problems else None
    eval_ids = encode_prompts(tokenizer, evaluated.prompts, chat=config.chat) if evaluated else None
    reference = copy.deepcopy(model).eval().requires_grad_(False) if config.beta > 0 else None
    for convert in config.conversions(model.config.num_hidden_layers):
        convert(model)
    model.train()
    if engine.is_main and not resume:
        (run_dir / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    collector = Collector(config.collect_settings(), train, train_ids, prompt_stream(train, config.seed), tokenizer)
    buffer, loss = RolloutBuffer(), RLLoss(config.loss_settings())
    clock = {"last": time.perf_counter(), "eval": 0.0}

    def new_rollouts(rl_step: int) -> None:
        policy = engine.unwrapped()
        with torch.random.fork_rng():
            torch.manual_seed(config.seed * 1_000_003 + rl_step)
            collected = collector.collect(policy, buffer.cursor)
        inputs = collected.inputs
        old = ref = None
        with torch.no_grad(), engine.autocast():
            if config.epochs > 1:  # later epochs need the sampling policy's log-probs
                old = _logprobs(loss, policy, inputs)
            if reference is not None:
                ref = _logprobs(loss, reference, inputs)
        buffer.batch = rollout_batch(inputs, collected.advantages, old, ref)
        buffer.rl_step, buffer.cursor = rl_step, collected.next_cursor
        buffer.tokens += int(collected.metrics["generated_tokens"])
        buffer.metrics = collected.metrics

    def batch(update: int) -> dict[str, Tensor]:
        rl_step = update // config.epochs
        if buffer.rl_step != rl_step:
            new_rollouts(rl_step)
        return buffer.batch

    def record_extras(update: int) -> dict[str, Any]:
        now = time.perf_counter()
        seconds = now - clock["last"] - (engine.eval_seconds - clock["eval"])
        clock["last"], clock["eval"] = now, engine.eval_seconds
        extras: dict[str, Any] = {"rl_step": (update - 1) // config.epochs + 1, "tokens_total": buffer.tokens,
                                  "step_seconds": seconds, "entropy": loss.last_entropy,
                                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if loss.last is not None:
            extras["clip_region"] = float(loss.last.clip_region)
        if (update - 1) % config.epochs == 0:  # the first update of an RL step carries its rollouts
            extras.update(buffer.metrics)
            extras["train_seconds"] = seconds - buffer.metrics["generation_seconds"]
        return extras

    def finished(update: int) -> bool:
        return (config.token_budget is not None and update % config.epochs == 0
                and buffer.tokens >= config.token_budget)

    task = TrainTask(
        model=model, batch=batch, loss=loss,
        build_optimizer=lambda m: build_optimizer(config.optimizer, m, lr=config.lr, weight_decay=config.weight_decay,
                                                  rank=config.rank, update_proj_gap=config.update_proj_gap),
        evaluate=None if evaluated is None else (
            lambda engine: greedy_accuracy(engine.unwrapped(), tokenizer, evaluated, eval_ids, config)),
        run_config=json.loads(json.dumps(asdict(config))), record_extras=record_extras,
        state=buffer.state, load_state=buffer.load_state, finished=finished,
    )
    outcome = engine.run(task, resume=resume)
    result = RLResult(config, outcome.records, math.ceil(outcome.steps / config.epochs), buffer.tokens,
                      outcome.train_seconds, outcome.eval_seconds, run_dir)
    if engine.is_main:
        write_summary(result)
    if engine.world_size > 1:
        torch.distributed.barrier()
    return result


def _logprobs(loss: RLLoss, model: nn.Module, inputs) -> Tensor:
    from leantrain.lean.token_logprobs import token_logprobs

    s = loss.settings
    return token_logprobs(model, inputs.input_ids, inputs.attention_mask, s.chunk_rows, s.temperature)[0].float()


def write_summary(result: RLResult) -> None:
    """``summary.json`` and ``summary.md``: the held-out accuracies from the start to the end, tokens, times."""
    config, records = result.config, result.records
    start, end = records[0], records[-1]
    summary = {"algo": config.algo, "steps": result.steps, "generated_tokens": result.generated_tokens,
               "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
               "evaluations": records}
    (result.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    lines = [f"# leantrain rl: {config.algo} on {config.data} ({config.model})", "",
             f"{result.steps} RL steps, {result.generated_tokens:,} generated tokens, "
             f"{result.train_seconds:.0f} s (evaluation {result.eval_seconds:.0f} s).", "",
             f"| held-out ({config.eval_problems} problems) | start | end |", "|---|---|---|"]
    for key in ("heldout_greedy_accuracy", "heldout_sampled_accuracy"):
        if key in start and key in end:
            lines.append(f"| {key.removeprefix('heldout_').replace('_', ' ')} | {start[key]:.3f} | {end[key]:.3f} |")
    lines += ["", "pass@k curves: `leantrain rl eval` on this folder."]
    (result.output_dir / "summary.md").write_text("\n".join(lines) + "\n")
