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
import math
import random
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from leantrain.config import describe_parts
from leantrain.config.fields import to_dict
from leantrain.config.rl import RLConfig
from leantrain.data.problems import Problems, load_problems
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.engine.loop import CHECKPOINT, CONFIG
from leantrain.engine.state import load_model_state
from leantrain.io import load_checkpoint
from leantrain.memory.allocator import trim_heap
from leantrain.plan.planner import MIB, planned
from leantrain.recipes.causal_lm import folder_and_tokenizer, load_causal_lm, model_folder
from leantrain.rl.collect import Collector, CollectSettings
from leantrain.rl.rollout_engine import generation_bytes
from leantrain.rl.rollouts import encode_prompts, rollout_dtype
from leantrain.rl.scoring import answer_accuracy
from leantrain.rl.training_loss import (
    LossSettings,
    RLLoss,
    batched_logprobs,
    idle_rows_are_exact,
    longest_first,
    rollout_batch,
    rows_with_gradient,
)
from leantrain.verify.rewards import RewardFunction


def collect_settings(config: RLConfig) -> CollectSettings:
    """How a step of the resolved ``config`` draws its rollouts (rl/collect.py)."""
    algorithm = config.algorithm
    return CollectSettings(algorithm=algorithm["collect"], prompts=config.prompts_per_step, rollouts=config.rollouts,
                           max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                           scale=config.scale, dars_rule=algorithm.get("dars_rule", "et"),
                           max_rollouts=config.max_rollouts, drop_zero_variance=algorithm["drop_zero_variance"],
                           self_refill=config.self_refill, batch_size=config.generation_batch,
                           engine=config.rollout_engine, dtype=config.rollout_dtype)


def loss_settings(config: RLConfig) -> LossSettings:
    """The policy loss of the resolved ``config`` (rl/training_loss.py)."""
    return LossSettings(loss_type=config.loss_type, epsilon_low=config.epsilon_low, epsilon_high=config.epsilon_high,
                        beta=config.beta, entropy_bonus=config.entropy_bonus, temperature=config.temperature,
                        max_completion_length=config.max_new_tokens, tis=config.tis, tis_cap=config.tis_cap)


def prepare_problems(config: RLConfig) -> tuple[Problems, Problems]:
    """(training, held-out) problems of ``config``: the same split for every run with the same data and data_seed."""
    return load_problems(config.data, config.problems, config.data_seed).split(config.held_out, config.data_seed)


@dataclass
class Prepared:
    """Everything a run needs before its model: the resolved config, the problems, their prompts encoded."""

    config: RLConfig
    train: Problems
    held_out: Problems
    folder: Path
    tokenizer: object
    train_ids: list[list[int]]


def prepare(config: RLConfig, problems: tuple[Problems, Problems] | None = None, engine: Engine | None = None,
            say: Callable[[str], None] = print) -> Prepared:
    """``config`` resolved (derived fields, and under ``memory.budget`` the planner's parts for a micro-batch of
    rows of the longest prompt plus max_new_tokens: prompts_per_step × rollouts of them, at most
    ``engine.micro_tokens`` tokens, in the budget that generating the rollouts leaves; its reasoning goes to
    ``say``), its problems loaded and their prompts encoded. Nothing is written and no model is loaded."""
    config = config.resolved()
    train, held_out = problems or prepare_problems(config)
    folder, tokenizer = folder_and_tokenizer(config.model, engine)
    train_ids = encode_prompts(tokenizer, train.prompts, chat=config.chat)
    width = max(len(ids) for ids in train_ids) + config.max_new_tokens
    rows = max(1, config.prompts_per_step * config.rollouts // config.engine.grad_accum)
    if config.engine.micro_tokens is not None:  # the micro-batches hold whole rows, one at least
        rows = min(rows, max(1, config.engine.micro_tokens // width))
    budget = config.memory.budget
    if budget is not None:  # the step is planned in what generating the rollouts leaves
        generating, dtype = rollout_bytes(config, folder, width)
        say(f"rollouts: {generating / MIB:,.1f} MiB beyond the weights (the KV cache and next-token logits of "
            f"{config.generation_batch} rows of up to {width} tokens, generated in {dtype})")
        if generating >= budget:
            raise ValueError(f"generating the rollouts alone needs {generating / MIB:,.0f} MiB beyond the weights, "
                             f"more than --memory-budget {budget / MIB:,.0f} MiB: lower --rollout-batch "
                             f"({config.generation_batch}) or --max-new-tokens ({config.max_new_tokens})")
        config = replace(config, memory=replace(config.memory, budget=budget - generating))
        config = planned(config, str(folder), rows, width, say)
        config = replace(config, memory=replace(config.memory, budget=budget))
    return Prepared(config, train, held_out, folder, tokenizer, train_ids)


def rollout_bytes(config: RLConfig, folder: Path, width: int) -> tuple[int, str]:
    """(bytes, dtype): what generating ``config``'s rollouts holds beyond the trained weights
    (``generation_bytes``, a copy of the weights included when generating in another dtype), and in which
    dtype it generates."""
    from leantrain.models.presets import meta_model

    weights = getattr(torch, config.optim.dtype)
    model = meta_model(str(folder)).to(weights)
    dtype = rollout_dtype(config.rollout_dtype, "cuda" if torch.cuda.is_available() else "cpu", weights)
    copy = "" if dtype == weights else " (a copy of the weights)"
    return generation_bytes(model, config.generation_batch, width, dtype), str(dtype).removeprefix("torch.") + copy


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
    if (run / CONFIG).is_file() and (run / CHECKPOINT).is_file():
        config = RLConfig.from_file(run / CONFIG)
        model, tokenizer = load_causal_lm(model_folder(config.model), dtype=config.optim.dtype)
        config.memory.apply(model)
        load_model_state(model, load_checkpoint(run / CHECKPOINT)["model"], sharded=False)
        return model.eval(), tokenizer, config
    model, tokenizer = load_causal_lm(model_folder(str(source)))
    return model.eval(), tokenizer, None


def greedy_accuracy(policy: nn.Module, tokenizer, problems: Problems, prompt_ids: list[list[int]],
                    config: RLConfig) -> dict[str, float]:
    """Accuracy of greedy answers, and of one sample at the rollout temperature (seeded), on ``problems``."""
    return {f"heldout_{name}_accuracy": answer_accuracy(policy, tokenizer, problems, prompt_ids,
                                                         max_new_tokens=config.max_new_tokens, temperature=temperature,
                                                         top_p=config.top_p, batch_size=config.generation_batch,
                                                         seed=config.engine.seed)
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
    engine = Engine(config.engine.output_dir, on_record=on_log, show_progress=show_bar)
    prepared = prepare(config, problems, engine, say=print if engine.is_main else lambda _: None)
    config, train, held_out, tokenizer = prepared.config, prepared.train, prepared.held_out, prepared.tokenizer
    if reward_functions is not None:
        train, held_out = (replace(p, reward_functions=dict(reward_functions)) for p in (train, held_out))
    evaluated = held_out.subset(range(min(config.eval_problems, len(held_out)))) if config.eval_problems else None
    eval_ids = encode_prompts(tokenizer, evaluated.prompts, chat=config.chat) if evaluated else None
    model, _ = load_causal_lm(prepared.folder, config.engine.seed, config.optim.dtype)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if config.beta > 0 else None
    config.memory.apply(model)
    model.train()
    seed, epochs = config.engine.seed, config.ppo_epochs
    collector = Collector(collect_settings(config), train, prepared.train_ids, prompt_stream(train, seed), tokenizer)
    buffer, loss = RolloutBuffer(), RLLoss(loss_settings(config))
    clock = {"last": time.perf_counter(), "eval": 0.0}

    def new_rollouts(rl_step: int) -> None:
        trim_heap()  # the last update's freed gradients back to the OS before generating
        policy = engine.unwrapped()
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1_000_003 + rl_step)
            collected = collector.collect(policy, buffer.cursor)
        whole, advantages = longest_first(collected.inputs, collected.advantages)
        inputs = whole
        if idle_rows_are_exact(loss.settings):  # rows at advantage 0 would add exactly 0 to the gradient
            inputs, advantages = rows_with_gradient(whole, advantages, engine.world_size * config.engine.grad_accum)
        old = ref = None
        with engine.autocast():
            if epochs > 1:  # later epochs need the sampling policy's log-probs
                old = batched_logprobs(policy, inputs, loss.settings, config.engine.micro_tokens)
            if reference is not None:
                ref = batched_logprobs(reference, inputs, loss.settings, config.engine.micro_tokens)
        buffer.batch = rollout_batch(inputs, advantages, old, ref, whole)
        buffer.rl_step, buffer.cursor = rl_step, collected.next_cursor
        buffer.tokens += int(collected.metrics["generated_tokens"])
        buffer.metrics = {**collected.metrics, "gradient_rows": len(inputs.input_ids),
                          "signal_rows": int(collected.advantages.ne(0).sum())}

    def batch(update: int) -> dict[str, Tensor]:
        rl_step = update // epochs
        if buffer.rl_step != rl_step:
            new_rollouts(rl_step)
        return buffer.batch

    def record_extras(update: int) -> dict[str, Any]:
        now = time.perf_counter()
        seconds = now - clock["last"] - (engine.eval_seconds - clock["eval"])
        clock["last"], clock["eval"] = now, engine.eval_seconds
        extras: dict[str, Any] = {"rl_step": (update - 1) // epochs + 1, "tokens_total": buffer.tokens,
                                  "step_seconds": seconds, "entropy": loss.last_entropy,
                                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if loss.last is not None:
            extras["clip_region"] = float(loss.last.clip_region)
        extras.update(loss.take_mismatch(engine.sum_over_processes))  # sampler vs trained log-probs (bf16 rollouts)
        if (update - 1) % epochs == 0:  # the first update of an RL step carries its rollouts
            extras.update(buffer.metrics)
            extras["train_seconds"] = seconds - buffer.metrics["generation_seconds"]
        return extras

    def finished(update: int) -> bool:
        return config.token_budget is not None and update % epochs == 0 and buffer.tokens >= config.token_budget

    def trimmed_loss(model: nn.Module, micro: Mapping[str, Tensor]) -> Tensor:
        trim_heap()  # the last micro-batch's and the rollouts' freed pages back to the OS (memory/allocator.py)
        return loss(model, micro)

    task = TrainTask(
        model=model, batch=batch, loss=trimmed_loss, optim=config.optim,
        evaluate=None if evaluated is None else (
            lambda engine: greedy_accuracy(engine.unwrapped(), tokenizer, evaluated, eval_ids, config)),
        run_config=to_dict(config), record_extras=record_extras,
        state=buffer.state, load_state=buffer.load_state, finished=finished,
    )
    every = None if config.eval_every is None else config.eval_every * epochs
    outcome = engine.run(task, config.engine, RunPlan(config.steps * epochs, every, eval_at_start=True,
                                                      description=f"rl {config.algo}"), resume=resume)
    result = RLResult(config, outcome.records, math.ceil(outcome.steps / epochs), buffer.tokens,
                      outcome.train_seconds, outcome.eval_seconds, Path(config.engine.output_dir))
    if engine.is_main:
        write_summary_markdown(result)
    engine.finish({"algo": config.algo, "parts": describe_parts(config.memory, config.optim), "steps": result.steps,
                   "generated_tokens": result.generated_tokens, "train_seconds": result.train_seconds,
                   "eval_seconds": result.eval_seconds, "evaluations": result.records})
    return result


def write_summary_markdown(result: RLResult) -> None:
    """``summary.md``: the held-out accuracies from the start to the end, tokens, times."""
    config, records = result.config, result.records
    start, end = records[0], records[-1]
    lines = [f"# leantrain rl: {config.algo} on {config.data} ({config.model})", "",
             f"{result.steps} RL steps, {result.generated_tokens:,} generated tokens, "
             f"{result.train_seconds:.0f} s (evaluation {result.eval_seconds:.0f} s); "
             f"{describe_parts(config.memory, config.optim)}.", "",
             f"| held-out ({config.eval_problems} problems) | start | end |", "|---|---|---|"]
    for key in ("heldout_greedy_accuracy", "heldout_sampled_accuracy"):
        if key in start and key in end:
            lines.append(f"| {key.removeprefix('heldout_').replace('_', ' ')} | {start[key]:.3f} | {end[key]:.3f} |")
    lines += ["", "pass@k curves: `leantrain rl eval` on this folder."]
    (result.output_dir / "summary.md").write_text("\n".join(lines) + "\n")
