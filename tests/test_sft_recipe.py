"""The SFT recipe end to end on a tiny random Llama: training lowers the held-out answer loss, the saved
model is the trained one (LoRA merged), resume continues the same run, gradient accumulation gives the
step's token mean, exact memory parts leave the run unchanged, reasoning-gym data gets an accuracy, the
command line, and bad input."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from tiny_lm import ROLE_TEMPLATE, tiny_lm

from leantrain.cli import main as cli_main
from leantrain.config import EngineConfig, MemoryOptions, OptimConfig
from leantrain.config.fields import with_settings
from leantrain.config.sft import SFTConfig
from leantrain.data.sft import collate, encode_examples
from leantrain.io import read_metrics
from leantrain.recipes.causal_lm import load_causal_lm
from leantrain.recipes.sft import answer_loss, sft


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_lm(folder, ROLE_TEMPLATE)
    return str(folder)


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sums.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                                     {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]}) + "\n"
                            for a in range(10) for b in range(6)))
    return str(path)


def tiny(folder, model, data, **changes) -> SFTConfig:
    """``changes``: fields, or "section.field" (e.g. ``**{"engine.grad_accum": 2}``)."""
    config = SFTConfig(model=model, data=data, held_out=8, max_length=96, batch_size=4, epochs=1, warmup=0.0,
                       schedule="constant", eval_problems=0, engine=EngineConfig(str(folder), grad_clip=1.0),
                       optim=OptimConfig(lr=1e-3))
    return with_settings(config, changes)


def updates(folder) -> list[dict]:
    return [r for r in read_metrics(folder / "metrics.jsonl") if "loss" in r]


def test_training_lowers_the_held_out_loss_and_saves_the_trained_model(tmp_path, tiny_model, chats):
    result = sft(tiny(tmp_path / "run", tiny_model, chats, epochs=2), show_bar=False)
    start, end = result.records[0]["heldout_loss"], result.records[-1]["heldout_loss"]
    assert result.steps == 2 * (52 // 4) and end < start - 0.3
    saved, tokenizer = load_causal_lm(tmp_path / "run" / "model")
    held = json.loads((tmp_path / "run" / "config.json").read_text())
    assert held["memory"]["lora"] is None
    rows = [json.loads(line) for line in Path(chats).read_text().splitlines()]
    batch = collate([[e] for e in encode_examples(rows[:8], tokenizer, 96, "d")], tokenizer.eos_token_id)
    saved.eval()
    trained = result.output_dir / "model"
    assert (trained / "model.safetensors").is_file() and (trained / "tokenizer.json").is_file()
    with torch.no_grad():
        assert float(answer_loss(saved, batch)) < start  # the trained weights, not the starting ones


def test_lora_is_merged_into_the_saved_model(tmp_path, tiny_model, chats):
    from leantrain.engine.state import load_model_state
    from leantrain.io import load_checkpoint

    config = tiny(tmp_path / "run", tiny_model, chats, max_steps=3, memory=MemoryOptions(lora=4))
    sft(config, show_bar=False)
    rows = [json.loads(line) for line in Path(chats).read_text().splitlines()]
    saved, tokenizer = load_causal_lm(tmp_path / "run" / "model")
    adapted, _ = load_causal_lm(tiny_model)
    config.memory.apply(adapted)
    load_model_state(adapted, load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")["model"], sharded=False)
    batch = collate([[e] for e in encode_examples(rows[:8], tokenizer, 96, "d")], tokenizer.eos_token_id)
    saved.eval(), adapted.eval()
    assert not any("lora" in name for name, _ in saved.named_parameters())
    torch.testing.assert_close(answer_loss(saved, batch), answer_loss(adapted, batch), rtol=1e-5, atol=1e-6)


def test_ctrl_c_then_resume_continues_the_same_run(tmp_path, tiny_model, chats):
    sft(tiny(tmp_path / "straight", tiny_model, chats, max_steps=6, eval_every=2), show_bar=False)
    config = tiny(tmp_path / "resumed", tiny_model, chats, max_steps=6, eval_every=2)

    def ctrl_c_after_update_3(record):
        if record["step"] == 3 and "loss" in record:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        sft(config, show_bar=False, on_log=ctrl_c_after_update_3)
    assert len(updates(tmp_path / "resumed")) == 3
    result = sft(config, resume=True, show_bar=False)
    assert result.steps == 6
    assert read_metrics(tmp_path / "resumed" / "metrics.jsonl") == read_metrics(tmp_path / "straight" / "metrics.jsonl")


def test_gradient_accumulation_gives_the_steps_token_mean(tmp_path, tiny_model, chats):
    one = updates_of(sft(tiny(tmp_path / "one", tiny_model, chats, max_steps=3), show_bar=False))
    two = updates_of(sft(tiny(tmp_path / "two", tiny_model, chats, max_steps=3, **{"engine.grad_accum": 2}),
                         show_bar=False))
    for a, b in zip(one, two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def updates_of(result) -> list[dict]:
    return updates(result.output_dir)


@pytest.mark.parametrize(("memory", "state_bits"), [
    (MemoryOptions(checkpointing="layers", chunked_loss=True), 32),
    (MemoryOptions(checkpointing="selective", lean=True), 32),
    (MemoryOptions(lean=True), 8),
], ids=["checkpointing+chunked", "selective+lean", "lean+8bit"])
def test_exact_memory_parts_leave_the_run_unchanged(tmp_path, tiny_model, chats, memory, state_bits):
    eight = {"optim.state_bits": state_bits}
    reference = updates_of(sft(tiny(tmp_path / "ref", tiny_model, chats, max_steps=3, **eight), show_bar=False))
    got = updates_of(sft(tiny(tmp_path / "parts", tiny_model, chats, max_steps=3, memory=memory, **eight),
                         show_bar=False))
    for a, b in zip(reference, got, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_step_in_backward_turns_clipping_off_and_matches_an_unclipped_run(tmp_path, tiny_model, chats, capsys):
    unclipped = {"engine.grad_clip": None}
    reference = updates_of(sft(tiny(tmp_path / "ref", tiny_model, chats, max_steps=3, **unclipped), show_bar=False))
    config = tiny(tmp_path / "fused", tiny_model, chats, max_steps=3,
                  memory=MemoryOptions(checkpointing="layers", chunked_loss=True),
                  **{"optim.step_in_backward": True, "optim.state_bits": 8})
    got = updates_of(sft(config))
    assert "global-norm clipping is off (the norm is still logged)" in capsys.readouterr().out
    eight_bit = updates_of(sft(tiny(tmp_path / "ref8", tiny_model, chats, max_steps=3, **unclipped,
                                    **{"optim.state_bits": 8}), show_bar=False))
    for a, b in zip(eight_bit, got, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert reference[0]["loss"] == pytest.approx(got[0]["loss"], rel=1e-6)  # before the first update


def test_packing_trains_on_fewer_rows(tmp_path, tiny_model, chats):
    result = sft(tiny(tmp_path / "packed", tiny_model, chats, packing=True, batch_size=2), show_bar=False)
    assert result.steps < 52 // 2
    assert result.records[-1]["heldout_loss"] < result.records[0]["heldout_loss"]


def test_reasoning_gym_data_gets_an_exact_answer_accuracy(tmp_path):
    tiny_lm(tmp_path / "model", ROLE_TEMPLATE, context=256)  # the tiny tokenizer spells numbers out
    result = sft(tiny(tmp_path / "rg", str(tmp_path / "model"), "arithmetic", problems=40, held_out=6,
                      eval_problems=4, max_steps=1, max_new_tokens=8, max_length=256), show_bar=False)
    assert all(0.0 <= record["heldout_accuracy"] <= 1.0 for record in result.records)


def test_the_command_line_and_its_errors(tmp_path, tiny_model, chats, capsys):
    out = tmp_path / "cli"
    assert cli_main(["sft", "--model", tiny_model, "--data", chats, "--held-out", "8", "--max-length", "96",
                     "--max-steps", "2", "--batch-size", "4", "--eval-problems", "0", "--out", str(out),
                     "--checkpointing", "layers", "--state-bits", "8"]) == 0
    printed = capsys.readouterr().out
    assert "checkpointing (layers) + adamw 8-bit" in printed and "loss" in printed
    planned = ["sft", "--model", tiny_model, "--data", chats, "--held-out", "8", "--max-length", "96",
               "--memory-budget", "1GiB", "--print-config", "--out", str(tmp_path / "planned")]
    assert cli_main(planned) == 0
    printed = capsys.readouterr()
    assert "memory plan for a budget of 1,024 MiB" in printed.err and not (tmp_path / "planned").exists()
    assert json.loads(printed.out)["optim"]["lr"] == 2e-5  # derived: full fine-tuning
    long = ["sft", "--model", tiny_model, "--data", chats, "--held-out", "8", "--out", str(tmp_path / "long")]
    assert cli_main(long) == 2
    assert "max_length=512 is longer than the model's context of 96 tokens" in capsys.readouterr().err


def test_bad_input_gets_a_clear_error(tmp_path, tiny_model, chats):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) + "\n"
                                 for i in range(20)))
    with pytest.raises(ValueError, match="no answer tokens"):
        sft(tiny(tmp_path / "a", tiny_model, str(questions)), show_bar=False)
    odd = tmp_path / "odd.jsonl"
    odd.write_text("".join(json.dumps({"question": "q", "answer": "a"}) + "\n" for _ in range(20)))
    with pytest.raises(ValueError, match="unknown format"):
        sft(tiny(tmp_path / "b", tiny_model, str(odd)), show_bar=False)
    with pytest.raises(ValueError, match="must be <= held_out"):
        tiny(tmp_path, tiny_model, chats, eval_problems=9)
    with pytest.raises(ValueError, match="must be 'arithmetic', 'rg:TASK'"):
        sft(tiny(tmp_path / "c", tiny_model, "chats.txt"), show_bar=False)
    with pytest.raises(ValueError, match="make no batch of batch_size=64"):
        sft(tiny(tmp_path / "d", tiny_model, chats, batch_size=64), show_bar=False)
