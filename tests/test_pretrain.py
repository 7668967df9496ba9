"""The pretraining recipe on a tiny Llama and a slice of the KJV: resume, hard samples, bad configs."""

import json

import pytest
import torch

from leantrain.config import EngineConfig
from leantrain.config.fields import with_settings
from leantrain.config.pretrain import PretrainConfig
from leantrain.io import read_metrics
from leantrain.models.llama_sizes import build_llama
from leantrain.recipes.pretrain import hardest, pretrain


def tiny(tmp_path, name, **changes):
    """``changes``: fields, or "section.field" (e.g. ``**{"optim.lr": 1e-2}``)."""
    config = PretrainConfig(size="1m", max_chars=60_000, vocab_size=320, seq_len=32, batch_size=4,
                            tokens=32 * 4 * 10, warmup_steps=2, eval_every=3, eval_batches=2, schedule="wsd",
                            decay_steps=0.4, engine=EngineConfig(str(tmp_path / name), grad_clip=1.0, save_every=4))
    return with_settings(config, changes)


class Interrupted(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_curve(tmp_path):
    pretrain(tiny(tmp_path, "straight"), show_bar=False)
    config = tiny(tmp_path, "resumed")

    def crash_after_step_6(record):
        if record["step"] == 6 and "loss" in record:
            raise Interrupted

    with pytest.raises(Interrupted):
        pretrain(config, show_bar=False, on_log=crash_after_step_6)  # last checkpoint: step 4
    assert read_metrics(tmp_path / "resumed" / "metrics.jsonl")[-1]["step"] == 6
    result = pretrain(config, resume=True, show_bar=False)

    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert resumed == straight  # every loss, lr, grad norm and validation loss, bit for bit
    assert [r["step"] for r in straight if "val_loss" in r] == [3, 6, 9, 10]
    assert result.val_loss == straight[-1]["val_loss"] and result.train_tokens == 10 * 4 * 32
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["steps"] == 10
    assert (tmp_path / "resumed" / "model" / "model.safetensors").is_file()


def test_resume_refuses_a_changed_config(tmp_path):
    pretrain(tiny(tmp_path, "run", tokens=32 * 4 * 4), show_bar=False)
    with pytest.raises(ValueError, match=r"settings differ in \['optim\.lr'\]"):
        pretrain(tiny(tmp_path, "run", tokens=32 * 4 * 4, **{"optim.lr": 1e-2}), resume=True, show_bar=False)


def test_hard_samples_train_on_the_highest_loss_batches(tmp_path):
    torch.manual_seed(0)
    model = build_llama("1m", vocab_size=300, max_seq_len=16)
    candidates = [torch.randint(300, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(6)]
    with torch.no_grad():
        losses = [model(input_ids=ids, labels=ids).loss.item() for ids in candidates]
    kept = hardest(model, candidates, keep=2)
    top_two = sorted(range(6), key=lambda i: -losses[i])[:2]
    assert [id(k) for k in kept] == [id(candidates[i]) for i in sorted(top_two)]

    plain = pretrain(tiny(tmp_path, "plain", tokens=32 * 4 * 3), show_bar=False)
    hard = pretrain(tiny(tmp_path, "hard", tokens=32 * 4 * 3, hard_fraction=0.5), show_bar=False)
    first = [read_metrics(tmp_path / name / "metrics.jsonl")[0]["loss"] for name in ("plain", "hard")]
    assert hard.train_tokens == plain.train_tokens and first[1] > first[0]  # same start, harder batch kept


@pytest.mark.parametrize(("changes", "field"), [
    ({"size": "7b"}, "PretrainConfig.size"), ({"schedule": "step"}, "PretrainConfig.schedule"),
    ({"batch_size": 0}, "PretrainConfig.batch_size"), ({"tokens": 10}, "PretrainConfig.tokens"),
    ({"optim.lr": -1.0}, "OptimConfig.lr"), ({"hard_fraction": 0.0}, "PretrainConfig.hard_fraction"),
])
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"{field}\b.* must be"):
        with_settings(PretrainConfig(), changes)


def test_a_schedule_setting_the_schedule_does_not_take_is_refused():
    with pytest.raises(ValueError, match="decay_steps must be None: schedule 'cosine' does not take it"):
        PretrainConfig(schedule="cosine", decay_steps=0.2)
    with pytest.raises(ValueError, match="power_a must be None: schedule 'wsd' does not take it"):
        PretrainConfig(schedule="wsd", power_a=3.0)
    assert PretrainConfig(schedule="power", power_a=3.0, decay_steps=0.1).schedule_settings() == {
        "a": 3.0, "decay_steps": 0.1}


def test_bad_schedule_settings_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="decay_steps must be"):
        pretrain(tiny(tmp_path, "bad", decay_steps=50), show_bar=False)


def test_cli_pretrains_on_user_text_files(tmp_path, capsys):
    import argparse

    from leantrain.cli import pretrain as pretrain_cli
    from leantrain.data.corpus import kjv_text

    files = []
    for i in range(2):
        files.append(tmp_path / f"part{i}.txt")
        files[-1].write_text(kjv_text()[i * 20_000:(i + 1) * 20_000], encoding="utf-8")
    parser = argparse.ArgumentParser()
    pretrain_cli.add_arguments(parser)
    args = parser.parse_args(["--corpus", *map(str, files), "--output-dir", str(tmp_path / "run"), "--size", "1m",
                              "--vocab-size", "300", "--seq-len", "32", "--batch-size", "4", "--tokens", "1280",
                              "--schedule", "power", "--eval-every", "4"])
    assert pretrain_cli.run(args) == 0
    assert "final validation loss" in capsys.readouterr().out
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8, 10]
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lrs[1] == lrs[9] == 3e-3 and lrs[10] < lrs[9]  # Power: capped at eta_max, then its decay


@pytest.mark.parametrize("optimizer", ["galore", "fira", "frugal", "dct"])
def test_low_rank_optimizers_pretrain_and_resume_exactly(tmp_path, optimizer):
    changes = {"optim.name": optimizer, "optim.rank": 8, "optim.update_proj_gap": 3}
    pretrain(tiny(tmp_path, "straight", **changes), show_bar=False)
    config = tiny(tmp_path, "resumed", **changes)

    def crash_after_step_6(record):
        if record["step"] == 6 and "loss" in record:
            raise Interrupted

    with pytest.raises(Interrupted):
        pretrain(config, show_bar=False, on_log=crash_after_step_6)
    pretrain(config, resume=True, show_bar=False)
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert read_metrics(tmp_path / "resumed" / "metrics.jsonl") == straight
    losses = [r["loss"] for r in straight if "loss" in r]
    assert losses[-1] < losses[0]


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match=r"OptimConfig\.name='lion' is not one of adamw"):
        with_settings(PretrainConfig(), {"optim.name": "lion"})
