"""The one training loop under every recipe (the nanoGPT loop, on Accelerate, for several processes).

A recipe builds its model (conversions applied) and hands the engine a :class:`TrainTask`: a global
batch for each update, an optimizer section and a schedule factory, and an evaluation; with it the
config's ``EngineConfig`` section and a :class:`RunPlan` (updates, evaluations). The engine owns the
rest: process layout (one process, DDP or FSDP2), bf16 autocast, gradient accumulation, clipping,
the optimizer step fused into backward (``OptimConfig.step_in_backward``), progress, and the run
folder: ``config.json``, ``metrics.jsonl``, one checkpoint schema (engine/state.py), ``summary.json``,
Ctrl-C at an update boundary and bit-identical resume. Data is a function of the update index (the
engine's ``epoch_order`` reshuffles each epoch from the seed), so resuming needs no loader state.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from leantrain.config import EngineConfig, OptimConfig
from leantrain.data.micro_batches import Batch, local_micro_batches
from leantrain.engine import state as engine_state
from leantrain.engine.processes import fully_shard_model, make_accelerator
from leantrain.fp32_matmuls import prefer_fp32_matmuls_
from leantrain.io import MetricsWriter, load_checkpoint, save_checkpoint
from leantrain.io.interrupt import StopRequest
from leantrain.optim.in_backward import StepInBackward
from leantrain.optim.sixteen_bit import bf16_weights_
from leantrain.sampling import sample_ids
from leantrain.validation import is_positive_int

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
SAMPLE_IDS = "sample_ids"  # batch key: example ids for the sampled layers' cached importance, not a model input


def causal_or_task_loss(model: nn.Module, micro: Mapping[str, Tensor]) -> Tensor:
    """The default loss: the ``.loss`` an HF model returns when the batch holds ``labels``."""
    return model(**micro).loss


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as "section.field" -> value, so that a refused resume names the very setting."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


@dataclass(frozen=True)
class RunPlan:
    """What a recipe derives for the engine: ``max_steps`` optimizer updates; ``eval_every`` updates between
    evaluations (None: only at the end); ``eval_at_start``: evaluate the starting model too, as the record of
    step 0 (not again on resume); ``description``: the progress bar's label."""

    max_steps: int
    eval_every: int | None = None
    eval_at_start: bool = False
    description: str = "train"

    def __post_init__(self) -> None:
        if not is_positive_int(self.max_steps):
            raise ValueError(f"RunPlan.max_steps={self.max_steps!r} must be an integer >= 1")
        if self.eval_every is not None and not is_positive_int(self.eval_every):
            raise ValueError(f"RunPlan.eval_every={self.eval_every!r} must be None or an integer >= 1")


@dataclass
class TrainTask:
    """What a recipe hands the engine.

    ``batch(update)`` is the global batch of update ``update`` (0-based): tensors sharing their first
    (example) dimension, split by the engine over processes and micro-batches; a ``"sample_ids"``
    entry goes to ``lt.sample_ids`` instead of the model. ``optim`` builds the optimizer (after the
    model is placed) and says whether it steps in backward. ``evaluate(engine)`` returns metrics,
    runs on every process in eval mode under ``no_grad`` (use ``engine.sum_over_processes`` to
    split the work). ``run_config`` (JSON values: the recipe's resolved config) is written to
    ``config.json`` and must match on resume. ``record_extras(update)``
    adds fields to each update's metrics record. ``state()`` / ``load_state(state)``: the recipe's own
    state (tensors, dicts, lists, JSON scalars) that is not a function of the update index, e.g. an RL
    run's rollout buffer and prompt cursor; saved in every checkpoint, given back on resume.
    ``finished(update)``: True ends the run after that update (evaluated and saved as the last one),
    e.g. when a budget of generated tokens is spent; ``max_steps`` stays the upper bound.
    """

    model: nn.Module
    batch: Callable[[int], Batch]
    optim: OptimConfig
    build_schedule: Callable[[Optimizer], LRScheduler] | None = None
    evaluate: Callable[[Engine], dict[str, float]] | None = None
    loss: Callable[[nn.Module, Mapping[str, Tensor]], Tensor] = causal_or_task_loss
    run_config: Mapping[str, Any] = field(default_factory=dict)
    record_extras: Callable[[int], dict[str, Any]] | None = None
    state: Callable[[], dict[str, Any]] | None = None
    load_state: Callable[[dict[str, Any]], None] | None = None
    finished: Callable[[int], bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.optim, OptimConfig):
            raise ValueError(f"TrainTask.optim must be an OptimConfig, got {type(self.optim).__name__}")
        if (self.state is None) != (self.load_state is None):
            raise ValueError("TrainTask.state and TrainTask.load_state go together: give both or neither")


@dataclass
class EngineResult:
    steps: int
    records: list[dict[str, Any]]  # the evaluation records, with the mean training loss since the previous one
    train_seconds: float  # wall time of the updates, evaluations excluded
    last_loss: float
    eval_seconds: float = 0.0  # wall time of the evaluations (of this process's run, not before a resume)


class Engine:
    """``Engine(run_dir).run(task, config, plan, resume=False)``; see the module docstring.

    Under ``torchrun`` / ``accelerate launch`` each process runs the same code; process 0 alone
    prints, writes the run folder's files. ``run_dir=None`` writes nothing. The engine holds the
    processes from its creation; the settings of a run come with ``run``.
    """

    def __init__(self, run_dir: str | Path | None = None, on_record: Callable[[dict[str, Any]], None] | None = None,
                 show_progress: bool = True) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.on_record = on_record
        self.show_progress = show_progress
        self.accelerator = make_accelerator()
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.config = EngineConfig()  # the run's, from run()
        self.sharded = False
        self.model: nn.Module | None = None
        self.step = 0  # optimizer updates done
        self.eval_seconds = 0.0  # spent in evaluations by this process's run()

    # -- helpers for recipes ---------------------------------------------------------------------
    def sum_over_processes(self, values: Tensor) -> Tensor:
        """``values`` summed over every process (a collective: call it on all of them)."""
        if self.world_size == 1:
            return values
        values = values.clone()
        torch.distributed.all_reduce(values)
        return values

    def local_rows(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """This process's share of ``rows`` (example indices) and which of them count.

        Every process gets at least one row, so that all of them run the same number of forwards
        (FSDP2 gathers parameters collectively); a process whose share would be empty reruns the
        first row and counts nothing.
        """
        share = rows.tensor_split(self.world_size)[self.rank]
        if len(share) == 0:
            return rows[:1], torch.zeros(1, dtype=torch.bool)
        return share, torch.ones(len(share), dtype=torch.bool)

    def epoch_order(self, count: int, epoch: int) -> list[int]:
        """The order of ``count`` examples in epoch ``epoch``: a shuffle seeded by the run's seed and the epoch."""
        seed = self.config.seed * 1_000_003 + epoch
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` (process 0) and wait for every process: the last call of a recipe."""
        if self.run_dir is not None and self.is_main:
            (self.run_dir / SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
        if self.world_size > 1:
            torch.distributed.barrier()

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on this process's device when ``precision="bf16"``; else nothing."""
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16,
                              enabled=self.config.precision == "bf16")

    def unwrapped(self) -> nn.Module:
        """The model without its DDP wrapper (FSDP2's ``fully_shard`` works in place: the model itself)."""
        return self.accelerator.unwrap_model(self.model)

    def full_state_dict(self) -> dict[str, Tensor]:
        """The whole model's state, full tensors (gathered under FSDP2; a collective there)."""
        return engine_state.full_model_state(self.unwrapped(), self.sharded)

    # -- the loop ---------------------------------------------------------------------------------
    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.sharded:
            return fully_shard_model(model.to(self.accelerator.device))
        return self.accelerator.prepare_model(model)

    def _checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINT

    def _save(self, step: int, task: TrainTask, optimizer, schedule, records, loss_window) -> None:
        path = self._checkpoint_path()
        if path is None:
            return
        model = self.unwrapped()
        state = {
            "format": engine_state.FORMAT, "step": step, "world_size": self.world_size, "sharded": self.sharded,
            "config": dict(task.run_config),
            "model": engine_state.model_state(model, self.sharded),
            "optimizer": None if self.sharded else optimizer.state_dict(),
            "schedule": None if schedule is None else schedule.state_dict(),
            "records": records, "loss_window": list(loss_window),
            "task": None if task.state is None else task.state(),
            "ranks": engine_state.gather_rank_states(model, optimizer if self.sharded else None),
        }
        if self.is_main:
            save_checkpoint(path, state)
        if self.world_size > 1:
            torch.distributed.barrier()

    def _restore(self, task: TrainTask, optimizer, schedule) -> tuple[int, list, list]:
        path = self._checkpoint_path()
        if path is None:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {str(path)!r} does not exist")
        state = load_checkpoint(path)
        if state.get("format") != engine_state.FORMAT:
            raise ValueError(f"cannot resume {str(path)!r}: written by another version (format "
                             f"{state.get('format')!r}, this engine reads {engine_state.FORMAT!r})")
        saved, current = _flat(state["config"]), _flat(task.run_config)
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            raise ValueError(f"cannot resume {str(path)!r}: the run's settings differ in {changed}")
        if state["sharded"] != self.sharded or (self.sharded and state["world_size"] != self.world_size):
            raise ValueError(f"cannot resume {str(path)!r}: its optimizer state is kept "
                             f"{'in per-process FSDP2 shards' if state['sharded'] else 'whole'} for "
                             f"{state['world_size']} process(es); resume with the layout and number of processes "
                             "that wrote it")
        model = self.unwrapped()
        engine_state.load_model_state(model, state["model"], self.sharded)
        if self.sharded:
            engine_state.load_local_optimizer_state(optimizer, state["ranks"][self.rank]["optimizer"])
        else:
            optimizer.load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
        if task.load_state is not None:
            task.load_state(state.get("task"))
        if not engine_state.load_rank_state(model, state["ranks"], self.rank):
            torch.manual_seed(self._rank_seed() + state["step"])
        if state["world_size"] != self.world_size and self.is_main:
            print(f"resuming a {state['world_size']}-process checkpoint on {self.world_size} process(es): "
                  "the curve continues, but not bit for bit", flush=True)
        return state["step"], list(state["records"]), list(state["loss_window"])

    def _rank_seed(self) -> int:
        return self.config.seed + 1_000_003 * self.rank

    def _record(self, metrics: MetricsWriter | None, record: dict[str, Any]) -> None:
        if metrics is not None:
            metrics.write(record)
        if self.on_record is not None and self.is_main:
            self.on_record(record)

    def _evaluate(self, task: TrainTask, step: int, loss_window: list[float]) -> dict[str, Any]:
        record: dict[str, Any] = {"step": step}
        if loss_window[1]:
            record["train_loss"] = loss_window[0] / loss_window[1]
        if task.evaluate is not None:
            started = time.perf_counter()
            self.model.eval()
            with torch.no_grad(), self.autocast():
                record.update(task.evaluate(self))
            self.model.train()
            self.eval_seconds += time.perf_counter() - started
        return record

    def _update(self, task: TrainTask, batch: Batch, optimizer: Optimizer,
                stepper: StepInBackward | None) -> tuple[float, float]:
        """One optimizer update from one global batch: (global mean loss, gradient norm before clipping).

        With ``stepper`` the backward itself updates the parameters (``step_in_backward``).
        """
        micros = local_micro_batches(batch, self.rank, self.world_size, self.config.grad_accum,
                                     self.config.micro_tokens)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for index, (micro, weight) in enumerate(micros):
            micro = dict(micro)
            ids = micro.pop(SAMPLE_IDS, None)
            last = index == len(micros) - 1
            if self.sharded:  # FSDP2: reduce-scatter the gradients after the last micro-batch only
                self.model.set_requires_gradient_sync(last)
            # DDP synchronises after the last micro-batch; under the step in backward, each hook does it instead
            own_sync = stepper is not None and self.world_size > 1
            sync = (contextlib.nullcontext() if (last and not own_sync) or self.sharded
                    else self.accelerator.no_sync(self.model))
            if stepper is not None:
                stepper.accumulating = not last
            chosen = contextlib.nullcontext() if ids is None else sample_ids(self.unwrapped(), ids)
            with sync, chosen:  # backward inside sample_ids: recomputed blocks draw their rows there
                with self.autocast():
                    loss = task.loss(self.model, micro)
                (loss * weight).backward()
            loss_sum += loss.detach().double().cpu() * weight
        if stepper is not None:  # each parameter was stepped, and its gradient freed, in backward
            norm = stepper.grad_norm()
        else:
            parameters = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
            if self.config.grad_clip is not None:
                torch.nn.utils.clip_grads_with_norm_(parameters, self.config.grad_clip, norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(self.sum_over_processes(loss_sum)) / self.world_size, float(norm)

    def run(self, task: TrainTask, config: EngineConfig, plan: RunPlan, resume: bool = False) -> EngineResult:
        """Train ``plan.max_steps`` updates (or the rest of them, with ``resume``) with ``config``'s settings."""
        from tqdm.auto import tqdm

        if not isinstance(config, EngineConfig):
            raise ValueError(f"config must be an EngineConfig, got {type(config).__name__}")
        in_backward = task.optim.step_in_backward
        if in_backward and self.world_size > 1 and config.layout == "fsdp2":
            raise ValueError(f"step_in_backward=True runs under DDP or in one process, not under FSDP2 on "
                             f"{self.world_size} processes: a gradient is whole only before FSDP2 reduce-scatters it, "
                             "after the hook would step it; use layout='ddp'")
        if in_backward and config.grad_clip is not None:
            config = replace(config, grad_clip=None)
            if self.is_main and self.show_progress:
                print("the step in backward updates each parameter before the others' gradients exist, so global-"
                      "norm clipping is off (the norm is still logged)", flush=True)
        self.config = config
        self.sharded = self.world_size > 1 and config.layout == "fsdp2"
        save_every = plan.eval_every if config.save_every is None else config.save_every
        torch.manual_seed(self._rank_seed())
        if task.optim.weights == "bf16":
            bf16_weights_(task.model)  # a no-op for a model loaded in bf16, as the recipes load it
        self.model = self._wrap(task.model)
        prefer_fp32_matmuls_(self.unwrapped())  # bf16 products on a CPU without bf16 units: in fp32, 5-100x faster
        self.model.train()
        # FSDP2 shards in place: the model itself; the same rounding draws on every process keep replicas equal
        optimizer = task.optim.build(self.unwrapped(), seed=config.seed)
        schedule = None if task.build_schedule is None else task.build_schedule(optimizer)
        start, records, loss_window = 0, [], [0.0, 0]
        if resume:
            start, records, loss_window = self._restore(task, optimizer, schedule)
        elif self.run_dir is not None and self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG).write_text(json.dumps(dict(task.run_config), indent=2))
        self.step = start
        metrics = None
        if self.run_dir is not None and self.is_main:
            metrics = MetricsWriter(self.run_dir / METRICS, resume_step=start if resume else None)
        bar = tqdm(total=plan.max_steps, initial=start, desc=plan.description, leave=False,
                   disable=not (self.show_progress and self.is_main))
        step, loss, started = start, math.nan, time.perf_counter()
        if plan.eval_at_start and start == 0:
            records.append(self._evaluate(task, 0, loss_window))
            self._record(metrics, records[-1])
        end = start if resume and task.finished is not None and task.finished(start) else plan.max_steps
        stepper = None
        try:
            if in_backward:  # after the optimizer is built and its state restored
                stepper = StepInBackward(self.unwrapped(), optimizer, average_over=self.world_size)
            with StopRequest() as stop:
                for step in range(start + 1, end + 1):
                    lr = optimizer.param_groups[0]["lr"]
                    loss, norm = self._update(task, task.batch(step - 1), optimizer, stepper)
                    self.step = step
                    if schedule is not None:
                        schedule.step()
                    loss_window[0] += loss
                    loss_window[1] += 1
                    extras = {} if task.record_extras is None else task.record_extras(step)
                    self._record(metrics, {"step": step, "loss": loss, "lr": lr, "grad_norm": norm, **extras})
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}")
                    last = step == plan.max_steps or (task.finished is not None and task.finished(step))
                    if (plan.eval_every and step % plan.eval_every == 0) or last:
                        records.append(self._evaluate(task, step, loss_window))
                        loss_window = [0.0, 0]
                        self._record(metrics, records[-1])
                    stopping = self._stop_requested(stop)
                    if stopping or (save_every and step % save_every == 0) or last:
                        self._save(step, task, optimizer, schedule, records, loss_window)
                    if stopping:
                        raise KeyboardInterrupt
                    if last:
                        break
        finally:
            if stepper is not None:
                stepper.remove()
            bar.close()
            if metrics is not None:
                metrics.close()
        return EngineResult(step, records, time.perf_counter() - started - self.eval_seconds, loss, self.eval_seconds)

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Ctrl-C on any process stops every process after the same update."""
        flag = torch.tensor(float(stop.requested))
        return bool(self.sum_over_processes(flag) > 0)
