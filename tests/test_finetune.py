"""The fine-tuning recipe end to end on a tiny random BERT saved as a local HF folder."""

import csv
import json

import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from leantrain.cli import main
from leantrain.data.classification import load_classification_data
from leantrain.models.pretrained import minilm_path
from leantrain.recipes.finetune import FinetuneConfig, parse_run, run_finetune

TEXTS = {"sport": "the team won the match with a late goal", "money": "shares fell as the bank raised rates"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(BertConfig(
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


def train(tiny_model, csv_data, run):
    config = parse_run(run, FinetuneConfig(model=tiny_model, data=csv_data, epochs=4, batch_size=8, seq_len=16,
                                           lr=1e-2))
    result = run_finetune(config, show_bar=False)
    assert len(result.accuracy_by_epoch) == len(result.train_loss_by_epoch) == 4
    return result


@pytest.mark.parametrize("run", ["full", "full+wtacrs@0.3", "full+crs@0.3"])
def test_full_finetuning_learns_a_separable_task(tiny_model, csv_data, run):
    assert train(tiny_model, csv_data, run).accuracy == 1.0


@pytest.mark.parametrize("run", ["lora", "lora+wtacrs@0.3", "lora+topk@0.5"])
def test_lora_finetuning_lowers_the_training_loss(tiny_model, csv_data, run):
    losses = train(tiny_model, csv_data, run).train_loss_by_epoch
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
        run_finetune(FinetuneConfig(model=str(tmp_path), data=csv_data), show_bar=False)
    with pytest.raises(ValueError, match="batch_size=0 must be an integer >= 1"):
        FinetuneConfig(batch_size=0)
    with pytest.raises(ValueError, match="'quantum' is neither"):
        parse_run("full+quantum", FinetuneConfig())
    with pytest.raises(ValueError, match=r"budget=2\.0 must be"):
        parse_run("lora+wtacrs@2", FinetuneConfig())


def test_cli_compares_runs_side_by_side(tiny_model, csv_data, capsys):
    assert main(["finetune", "--model", tiny_model, "--data", csv_data, "--runs", "full,lora+wtacrs@0.3",
                 "--seq-len", "16", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "LoRA + WTA-CRS@0.3" in out and "test accuracy" in out
    assert main(["finetune", "--model", tiny_model, "--data", csv_data, "--batch-size", "0"]) == 2
