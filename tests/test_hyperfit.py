"""The hyperfitting recipe end to end on a tiny random Llama with a BPE tokenizer: every report file,
resume, LoRA on the last layers, bad input, the command line, and two processes."""

import json
import math

import pytest
import torch
from distributed import assert_same_records, launch

from leantrain.cli import main as cli_main
from leantrain.config import EngineConfig, MemoryOptions, OptimConfig
from leantrain.config.fields import with_settings
from leantrain.config.hyperfit import HyperfitConfig
from leantrain.data.corpus import bbc_text
from leantrain.data.tokenizer import END_OF_TEXT, train_tokenizer
from leantrain.io import read_metrics
from leantrain.recipes.causal_lm import load_causal_lm, model_folder
from leantrain.recipes.hyperfit import hyperfit
from leantrain.sampling import SamplingConfig


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = train_tokenizer(bbc_text()[:100_000], 400)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT).save_pretrained(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=96, eos_token_id=0)).save_pretrained(folder)
    return str(folder)


def tiny(folder, model, **changes) -> HyperfitConfig:
    """``changes``: fields, or "section.field" (e.g. ``**{"engine.layout": "fsdp2"}``)."""
    config = HyperfitConfig(model=model, sequences=12, seq_len=40, batch_size=4, epochs=4, eval_every=2,
                            eval_contexts=4, eval_batch_size=4, context_len=8, new_tokens=24, ttr_window=16, samples=2,
                            engine=EngineConfig(str(folder)), optim=OptimConfig(lr=3e-3))
    return with_settings(config, changes)


class Interrupted(Exception):
    pass


def test_the_recipe_writes_every_report_file(tmp_path, tiny_model):
    result = hyperfit(tiny(tmp_path / "run", tiny_model), show_bar=False)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "samples.jsonl", "summary.json",
                 "summary.md", "report.png", "samples.md"):
        assert (run / name).is_file(), name
    assert [r["step"] for r in result.records] == [0, 6, 12] and [r["epoch"] for r in result.records] == [0, 2, 4]
    updates = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert len(updates) == 12 and updates[-1]["loss"] < updates[0]["loss"]  # it fits its 12 sequences
    for domain in ("heldout", "other"):
        for key in ("ppl", "entropy", "top1", "ttr_greedy", "ttr_top_p", "rep3_greedy", "copied_greedy"):
            assert all(f"{domain}_{key}" in r for r in result.records), (domain, key)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["start"]["step"] == 0 and summary["end"]["step"] == 12 and summary["control"]["temperature"] > 0
    assert "## heldout: held-out text of bbc" in (run / "summary.md").read_text()
    samples = (run / "samples.md").read_text()
    assert samples.count("**before, greedy:**") == 4 and "**after (epoch 4), greedy:**" in samples
    assert (run / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_the_same_run(tmp_path, tiny_model):
    hyperfit(tiny(tmp_path / "straight", tiny_model, entropy_control=False), show_bar=False)
    config = tiny(tmp_path / "resumed", tiny_model, entropy_control=False)

    def crash_after_step_8(record):
        if record["step"] == 8 and "loss" in record:
            raise Interrupted

    with pytest.raises(Interrupted):
        hyperfit(config, show_bar=False, on_log=crash_after_step_8)  # last checkpoint: step 6
    result = hyperfit(config, resume=True, show_bar=False)
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert read_metrics(tmp_path / "resumed" / "metrics.jsonl") == straight  # losses and every evaluation
    assert [r["step"] for r in result.records] == [0, 6, 12]  # the starting model is not evaluated again
    assert (tmp_path / "resumed" / "samples.md").read_text() == (tmp_path / "straight" / "samples.md").read_text()


def test_lora_on_the_last_layers_trains_only_their_adapters(tiny_model):
    model, _ = load_causal_lm(model_folder(tiny_model))
    tiny("unused", tiny_model, memory=MemoryOptions(lora=2, lora_layers=1)).memory.apply(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 14 and all(".layers.2." in name and "lora_" in name for name in trainable)
    with pytest.raises(ValueError, match=r"count=4 must be an integer in \[1, 3\]"):
        MemoryOptions(lora=2, lora_layers=4).apply(model)


def test_bad_input_gets_a_clear_error(tmp_path, tiny_model):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="the corpus has no text"):
        hyperfit(tiny(tmp_path / "a", tiny_model, corpus=str(empty)), show_bar=False)
    with pytest.raises(ValueError, match="seq_len=200 is longer than the model's context of 96"):
        hyperfit(tiny(tmp_path / "b", tiny_model, seq_len=200), show_bar=False)
    with pytest.raises(FileNotFoundError, match="neither 'smollm2' nor an HF model folder"):
        hyperfit(tiny(tmp_path / "c", str(tmp_path / "missing")), show_bar=False)
    for changes, message in (({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
                             ({"sequences": 2}, "sequences=2 must be >= batch_size=4"),
                             ({"context_len": 40}, "context_len=40 must be shorter than seq_len=40"),
                             ({"memory.lora_layers": 2}, "lora_layers needs lora")):
        with pytest.raises(ValueError, match=message):
            tiny(tmp_path, tiny_model, **changes)
    with pytest.raises(ValueError, match="preset='gpu' is not one of paper, cpu"):
        HyperfitConfig(preset="gpu")


def test_command_line_runs_and_reports_bad_input(tmp_path, tiny_model, capsys):
    common = ["hyperfit", "--model", tiny_model, "--sequences", "8", "--seq-len", "40", "--batch-size", "4",
              "--epochs", "1", "--eval-contexts", "2", "--context-len", "8", "--new-tokens", "16", "--ttr-window", "8",
              "--other-corpus", "none", "--no-entropy-control", "--lr", "1e-3"]
    assert cli_main([*common, "--out", str(tmp_path / "cli")]) == 0
    assert "report in" in capsys.readouterr().out
    assert not any("other_ppl" in r for r in read_metrics(tmp_path / "cli" / "metrics.jsonl"))
    assert cli_main([*common, "--out", str(tmp_path / "bad"), "--batch-size", "0"]) == 2
    assert "batch_size=0 must be an integer >= 1" in capsys.readouterr().err
    assert cli_main([*common, "--out", str(tmp_path / "planned"), "--memory-budget", "1GiB", "--print-config"]) == 0
    printed = capsys.readouterr()
    assert "memory plan for a budget of 1,024 MiB" in printed.err and not (tmp_path / "planned").exists()
    assert json.loads(printed.out)["memory"]["budget"] == 2**30


def held_out_metrics(config: HyperfitConfig) -> list[dict]:
    records = hyperfit(config, show_bar=False).records
    return [{k: v for k, v in r.items() if "top_p" not in k} for r in records]  # top-p draws depend on the split


@pytest.mark.parametrize("layout", ["ddp", "fsdp2"])
def test_two_processes_give_the_one_process_evaluations(tmp_path, tiny_model, layout):
    one = held_out_metrics(tiny(tmp_path / "one", tiny_model, entropy_control=False))
    two = launch(held_out_metrics, tiny(tmp_path / "two", tiny_model, entropy_control=False,
                                        **{"engine.layout": layout}))[0]
    assert_same_records(two, one)


COMPOSED = {
    "lora-last-sampled-lean": {"memory": MemoryOptions(lora=2, lora_layers=1, lean=True,
                                                       sampling=SamplingConfig("wtacrs", 0.3, seed=0)),
                               "optim.lr": 1e-2},
    "galore": {"optim.name": "galore", "optim.rank": 4},
    "dct-bf16": {"optim.name": "dct", "optim.rank": 4, "engine.precision": "bf16"},
    "checkpointing-8bit": {"memory.checkpointing": "layers", "optim.state_bits": 8},
}


@pytest.mark.parametrize("name", list(COMPOSED))
def test_the_recipe_composes_with_the_parts(tmp_path, tiny_model, name):
    result = hyperfit(tiny(tmp_path / name, tiny_model, epochs=2, entropy_control=False, **COMPOSED[name]),
                      show_bar=False)
    updates = [r for r in read_metrics(tmp_path / name / "metrics.jsonl") if "loss" in r]
    assert len(updates) == 6 and all(math.isfinite(r["loss"]) for r in updates)
    assert updates[-1]["loss"] < updates[0]["loss"]
    assert [r["step"] for r in result.records] == [0, 6] and math.isfinite(result.records[-1]["heldout_ppl"])
