"""The fine-tuning recipe end to end on a tiny random BERT saved as a local HF folder."""

import csv
import json

import pytest
from transformers import AutoTokenizer, BertConfig, BertModel

from leantrain.cli import main
from leantrain.config import EngineConfig, MemoryOptions, OptimConfig
from leantrain.config.fields import with_settings
from leantrain.config.finetune import FinetuneConfig
from leantrain.data.classification import load_classification_data
from leantrain.models.pretrained import minilm_path
from leantrain.recipes.finetune import parse_run, run_finetune

TEXTS = {"sport": "the team won the match with a late goal", "money": "shares fell as the bank raised rates"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    )).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def csv_data(tmp_path):
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        for i in range(40):
            label = "sport" if i % 2 else "money"
            writer.writerow({"text": f"{TEXTS[label]} {i}", "label": label})
    return str(path)


def tiny(tiny_model, csv_data, folder, **changes) -> FinetuneConfig:
    """``changes``: fields, or "section.field" (e.g. ``**{"optim.lr": 1.0}``)."""
    config = FinetuneConfig(model=tiny_model, data=csv_data, epochs=4, batch_size=8, seq_len=16,
                            engine=EngineConfig(str(folder)), optim=OptimConfig(lr=1e-2, weight_decay=0.01))
    return with_settings(config, changes)


def train(tiny_model, csv_data, run, folder):
    result = run_finetune(parse_run(run, tiny(tiny_model, csv_data, folder)), show_bar=False)
    assert len(result.accuracy_by_epoch) == len(result.train_loss_by_epoch) == 4
    return result


@pytest.mark.parametrize("run", ["full", "full+wtacrs@0.3", "full+crs@0.3"])
def test_full_finetuning_learns_a_separable_task(tiny_model, csv_data, run, tmp_path):
    assert train(tiny_model, csv_data, run, tmp_path).accuracy == 1.0


def test_full_finetuning_with_a_low_rank_optimizer(tiny_model, csv_data, tmp_path):
    config = tiny(tiny_model, csv_data, tmp_path, **{"optim.name": "fira", "optim.rank": 8})
    losses = run_finetune(config, show_bar=False).train_loss_by_epoch
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("run", ["lora", "lora+wtacrs@0.3", "lora+topk@0.5"])
def test_lora_finetuning_lowers_the_training_loss(tiny_model, csv_data, run, tmp_path):
    losses = train(tiny_model, csv_data, run, tmp_path).train_loss_by_epoch
    assert losses[-1] < losses[0], losses


def test_jsonl_with_a_separate_test_file_and_integer_labels(tmp_path):
    for name, n in [("train", 10), ("test", 4)]:
        with (tmp_path / f"{name}.jsonl").open("w") as f:
            for i in range(n):
                f.write(json.dumps({"body": f"text {i}", "y": i % 3}) + "\n")
    data = load_classification_data(str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"),
                                    text_column="body", label_column="y")
    assert data.label_names == ("0", "1", "2") and len(data.train) == 10 and len(data.test) == 4
    assert [e.label for e in data.test] == [0, 1, 2, 0]


def test_bad_input_gets_a_clear_error(tiny_model, csv_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classification_data(str(tmp_path / "missing.csv"))
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match="holds no examples"):
        load_classification_data(str(tmp_path / "empty.csv"))
    with pytest.raises(ValueError, match="has no column 'category'"):
        load_classification_data(csv_data, label_column="category")
    with pytest.raises(FileNotFoundError, match="is not an HF model folder"):
        run_finetune(tiny(str(tmp_path), csv_data, tmp_path / "run"), show_bar=False)
    with pytest.raises(ValueError, match="batch_size=0 must be an integer >= 1"):
        FinetuneConfig(batch_size=0)
    with pytest.raises(ValueError, match="'quantum' is neither"):
        parse_run("full+quantum", FinetuneConfig())
    with pytest.raises(ValueError, match=r"budget=2\.0 must be"):
        parse_run("lora+wtacrs@2", FinetuneConfig())
    with pytest.raises(ValueError, match=r"run 'full' is full fine-tuning, but LoRA rank 4 is set for every run"):
        parse_run("full", FinetuneConfig(memory=MemoryOptions(lora=4)))
    with pytest.raises(ValueError, match=r"run 'lora\+lean' sets lean to 'lean', but it is already set for every run"):
        parse_run("lora+lean", FinetuneConfig(memory=MemoryOptions(lean=True)))
    assert parse_run("lora", FinetuneConfig(memory=MemoryOptions(lora=4))).memory.lora == 4  # --lora sets the rank


def test_cli_compares_runs_side_by_side(tiny_model, csv_data, capsys, tmp_path):
    assert main(["finetune", "--model", tiny_model, "--data", csv_data, "--runs", "full,lora+wtacrs@0.3",
                 "--seq-len", "16", "--batch-size", "8", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "LoRA r8 + WTA-CRS@0.3" in out and "test accuracy" in out
    assert (tmp_path / "lora+wtacrs@0.3" / "checkpoint.safetensors").is_file()
    assert "peak memory" in out and "MiB" in out
    assert main(["finetune", "--model", tiny_model, "--data", csv_data, "--batch-size", "0", "--no-peak"]) == 2


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_bit_identically(tiny_model, csv_data, tmp_path):
    import os
    import signal

    import torch

    from leantrain.io import load_checkpoint, read_metrics

    config = parse_run("full+wtacrs@0.3", tiny(tiny_model, csv_data, tmp_path, epochs=2))
    whole = run_finetune(with_settings(config, {"engine.output_dir": str(tmp_path / "whole")}), show_bar=False)
    config = with_settings(config, {"engine.output_dir": str(tmp_path / "split")})

    def interrupt_at_step_6(record):
        if record["step"] == 6 and "loss" in record:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    with pytest.raises(KeyboardInterrupt):
        run_finetune(config, on_record=interrupt_at_step_6, show_bar=False)
    assert (tmp_path / "split" / "checkpoint.safetensors").is_file()
    resumed = run_finetune(config, resume=True, show_bar=False)
    assert resumed.accuracy_by_epoch == whole.accuracy_by_epoch
    assert resumed.train_loss_by_epoch == whole.train_loss_by_epoch
    assert read_metrics(tmp_path / "split" / "metrics.jsonl") == read_metrics(tmp_path / "whole" / "metrics.jsonl")
    final = load_checkpoint(tmp_path / "whole" / "checkpoint.safetensors")["model"]
    for name, value in load_checkpoint(tmp_path / "split" / "checkpoint.safetensors")["model"].items():
        assert torch.equal(value, final[name]), name


def test_resume_refuses_a_changed_config_and_bad_input_leaves_no_checkpoint(tiny_model, csv_data, tmp_path):
    config = tiny(tiny_model, csv_data, tmp_path / "run", epochs=1, **{"optim.lr": None})
    run_finetune(config, show_bar=False)
    with pytest.raises(ValueError, match=r"settings differ in \['optim\.lr'\]"):
        run_finetune(with_settings(config, {"optim.lr": 1.0}), resume=True, show_bar=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_finetune(tiny(tiny_model, csv_data, tmp_path / "fresh"), resume=True, show_bar=False)
    with pytest.raises(ValueError, match="has no column"):
        run_finetune(tiny(tiny_model, csv_data, tmp_path / "bad", label_column="nope"), show_bar=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "fresh").exists()


def test_the_peak_is_measured_on_the_run_itself(tiny_model):
    from leantrain.optim import GaLoreAdamW
    from leantrain.recipes.finetune import FinetuneStep
    from leantrain.sampling import SampledLinear

    config = parse_run("lora+wtacrs@0.3", FinetuneConfig(model=tiny_model, batch_size=3, seq_len=12,
                                                          optim=OptimConfig("galore", rank=4)))
    model, batch, optimizer = FinetuneStep(config, num_labels=7)()
    assert model.config.num_labels == 7 and batch["input_ids"].shape == (3, 12)
    assert isinstance(optimizer, GaLoreAdamW)  # the run's optimizer, not AdamW
    assert any(isinstance(m, SampledLinear) for m in model.modules())  # its conversions
    assert any("lora_A" in name for name, p in model.named_parameters() if p.requires_grad)
    assert model(**batch).loss.isfinite()
