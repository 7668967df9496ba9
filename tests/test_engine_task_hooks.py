"""The engine's task hooks: a recipe's own state travels in the checkpoint and comes back on resume, and a
task can end its run early (evaluated and saved as the last update) without a resume training on."""

import pytest
import torch
from tiny_lm import seeded_batch, tiny_llama

from leantrain.config import EngineConfig, OptimConfig
from leantrain.engine import Engine, RunPlan, TrainTask
from leantrain.io import load_checkpoint

tiny, batch = tiny_llama, seeded_batch


class Counter:
    """A recipe's state that is not a function of the update index: how many batches it handed out."""

    def __init__(self) -> None:
        self.served = 0
        self.restored: dict | None = None

    def batch(self, update: int) -> dict[str, torch.Tensor]:
        self.served += 1
        return batch(update)

    def state(self) -> dict:
        return {"served": self.served, "tensor": torch.full((2,), float(self.served))}

    def load_state(self, state: dict) -> None:
        self.restored = state
        self.served = state["served"]


def task(counter: Counter, finish_at: int | None = None) -> TrainTask:
    return TrainTask(model=tiny(), batch=counter.batch, state=counter.state, load_state=counter.load_state,
                     optim=OptimConfig(lr=1e-2),
                     evaluate=lambda engine: {"evaluated": 1.0},
                     finished=None if finish_at is None else (lambda update: update >= finish_at))


def run(task: TrainTask, run_dir, plan: RunPlan, resume: bool = False):
    return Engine(run_dir, show_progress=False).run(task, EngineConfig(str(run_dir)), plan, resume=resume)


def test_the_task_state_is_saved_and_given_back_on_resume(tmp_path):
    first = Counter()
    run(task(first), tmp_path, RunPlan(3))
    saved = load_checkpoint(tmp_path / "checkpoint.safetensors")["task"]
    assert saved["served"] == 3 and saved["tensor"].tolist() == [3.0, 3.0]
    second = Counter()
    result = run(task(second), tmp_path, RunPlan(5), resume=True)
    assert second.restored["served"] == 3 and second.served == 5 and result.steps == 5


def test_a_task_ends_its_run_early_and_a_resume_does_not_train_on(tmp_path):
    counter = Counter()
    result = run(task(counter, 3), tmp_path, RunPlan(10, eval_every=100))
    assert result.steps == 3 and counter.served == 3
    assert [r["step"] for r in result.records] == [3] and result.records[-1]["evaluated"] == 1.0
    assert load_checkpoint(tmp_path / "checkpoint.safetensors")["step"] == 3
    again = Counter()
    result = run(task(again, 3), tmp_path, RunPlan(10), resume=True)
    assert result.steps == 3 and again.served == 3  # restored, nothing served after


def test_state_and_load_state_go_together():
    with pytest.raises(ValueError, match=r"TrainTask\.state and TrainTask\.load_state go together"):
        TrainTask(model=tiny(), batch=batch, optim=OptimConfig("sgd", lr=0.1),
                  state=lambda: {})
