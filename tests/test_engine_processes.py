"""The engine on several processes (2 CPU processes on gloo, launched as torchrun launches them):
the same curve as one process at the same global batch, DDP and FSDP2, and resume after Ctrl-C."""

import os
import signal
import subprocess
import sys

import pytest
from distributed import launch

from leantrain.config import EngineConfig
from leantrain.config.fields import with_settings
from leantrain.config.pretrain import PretrainConfig
from leantrain.io import read_metrics
from leantrain.recipes.pretrain import pretrain
from leantrain.sampling import SamplingConfig


def tiny(folder, **changes) -> PretrainConfig:
    """``changes``: fields, or "section.field" (e.g. ``**{"engine.layout": "fsdp2"}``)."""
    config = PretrainConfig(size="1m", max_chars=40_000, vocab_size=320, seq_len=32, batch_size=4, tokens=32 * 8 * 8,
                            warmup_steps=2, eval_every=4, eval_batches=2, schedule="wsd", decay_steps=0.25,
                            engine=EngineConfig(output_dir=str(folder), grad_accum=2, grad_clip=1.0, save_every=4))
    return with_settings(config, changes)


def train(config: PretrainConfig) -> list[dict]:
    pretrain(config, show_bar=False)
    return read_metrics(os.path.join(config.engine.output_dir, "metrics.jsonl"))


def train_until_ctrl_c(config: PretrainConfig, stop_at: int) -> str:
    def press_ctrl_c(record: dict) -> None:  # only process 0 sees records; every process must stop
        if record["step"] == stop_at and "loss" in record:
            os.kill(os.getpid(), signal.SIGINT)

    try:
        pretrain(config, show_bar=False, on_log=press_ctrl_c)
    except KeyboardInterrupt:
        return "stopped"
    return "finished"


def resume(config: PretrainConfig) -> list[dict]:
    pretrain(config, resume=True, show_bar=False)
    return read_metrics(os.path.join(config.engine.output_dir, "metrics.jsonl"))


def close(a: list[dict], b: list[dict], key: str, rel: float) -> bool:
    x, y = [r[key] for r in a if key in r], [r[key] for r in b if key in r]
    return len(x) == len(y) > 0 and all(abs(u - v) <= rel * abs(v) for u, v in zip(x, y, strict=True))


@pytest.mark.parametrize("layout", ["ddp", "fsdp2"])
def test_two_processes_follow_the_one_process_curve(tmp_path, layout):
    one = train(tiny(tmp_path / "one"))
    two = launch(train, tiny(tmp_path / "two", **{"engine.layout": layout}))[0]
    # Exact parts, no dropout in Llama: the runs differ only by the order of float sums.
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for key in ("loss", "grad_norm", "val_loss"):
        assert close(two, one, key, rel=1e-4), key


def test_a_sampled_two_process_run_lies_within_the_estimators_spread(tmp_path):
    """With sampling, two processes draw other rows than one: the final validation loss must fall
    within the spread that the sampling seed alone gives a one-process run (same data, same init)."""
    import statistics

    def final(records: list[dict]) -> float:
        return [r["val_loss"] for r in records if "val_loss" in r][-1]

    def sampled(folder, seed: int) -> PretrainConfig:
        return tiny(folder, **{"memory.sampling": SamplingConfig("wtacrs", 0.3, seed=seed)})

    ones = [final(train(sampled(tmp_path / f"one-{seed}", seed))) for seed in range(6)]
    two = final(launch(train, sampled(tmp_path / "two", 0))[0])
    mean, spread = statistics.mean(ones), statistics.stdev(ones)
    assert spread > 0  # the seeds really sample differently
    assert abs(two - mean) <= 4 * spread * (1 + 1 / len(ones)) ** 0.5, (two, ones)


@pytest.mark.parametrize(("layout", "optimizer"), [("ddp", "adamw"), ("fsdp2", "galore")])
def test_a_two_process_checkpoint_resumes_bit_identically_after_ctrl_c(tmp_path, layout, optimizer):
    sampled = SamplingConfig("wtacrs", 0.3, seed=1)  # each process draws its own rows: per-rank state
    changes = {"memory.sampling": sampled, "memory.lean": True, "engine.layout": layout, "optim.name": optimizer,
               "optim.rank": 8 if optimizer == "galore" else None,
               "optim.update_proj_gap": 3 if optimizer == "galore" else None}
    straight = launch(train, tiny(tmp_path / "straight", **changes))[0]
    config = tiny(tmp_path / "split", **changes)
    assert launch(train_until_ctrl_c, config, 6) == ["stopped", "stopped"]
    assert read_metrics(tmp_path / "split" / "metrics.jsonl")[-1]["step"] == 6
    resumed = launch(resume, config)[0]
    assert resumed == straight  # every loss, lr, grad norm and validation loss, bit for bit
    one = train(tiny(tmp_path / "one", **changes))
    assert not close(straight, one, "loss", rel=1e-6)  # two processes did draw differently from one
    if layout == "fsdp2":  # its optimizer shards belong to 2 processes
        with pytest.raises(ValueError, match="resume with the layout and number of processes that wrote it"):
            resume(config)


def test_torchrun_runs_the_command_line(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("In the beginning was the word, and the word was with the text.\n" * 200)
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "leantrain", "pretrain", "--corpus",
         str(corpus), "--size", "1m", "--vocab-size", "300", "--seq-len", "32", "--batch-size", "4",
         "--tokens", "1280", "--eval-every", "5", "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("final validation loss") == 1  # process 0 alone prints
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "val_loss" in r] == [5, 10]


def test_the_step_in_backward_on_two_ddp_processes_equals_ordinary_ddp(tmp_path):
    """Each hook all-reduces its parameter's gradient and halves it before the step: with two processes that is
    one addition, as DDP's, so the runs agree bit for bit."""
    changes = {"engine.grad_accum": 1, "engine.grad_clip": None, "optim.name": "adamw"}
    ordinary = launch(train, tiny(tmp_path / "ordinary", **changes))[0]
    fused = launch(train, tiny(tmp_path / "fused", **changes, **{"optim.step_in_backward": True}))[0]
    assert [r for r in fused if "loss" in r] == [r for r in ordinary if "loss" in r]
    assert [r["val_loss"] for r in fused if "val_loss" in r] == [r["val_loss"] for r in ordinary if "val_loss" in r]
