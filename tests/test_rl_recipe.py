"""The RL recipe end to end on a tiny random Llama (BPE tokenizer, a plain chat template): each algorithm
runs two steps, DARS's ragged groups reach the loss, resume after Ctrl-C continues the same run (in the
middle of a DARS-B step too), a token budget ends the run, bad input, the command line with `rl eval`,
two processes, and the memory parts composed.

The tiny model answers no arithmetic, so the rewards here are a property of the text (the letter "e"
appears), which splits every group: the learning signal the algorithms need."""

import json
import math
import os
import signal
from dataclasses import replace

import pytest
import torch
from distributed import assert_same_records, launch
from tiny_lm import tiny_lm

from leantrain.cli import main as cli_main
from leantrain.config import EngineConfig, MemoryOptions, OptimConfig
from leantrain.config.fields import with_settings
from leantrain.config.rl import RLConfig
from leantrain.io import read_metrics
from leantrain.recipes.rl import greedy_accuracy, load_policy, prepare_problems, rl
from leantrain.rl.rollouts import encode_prompts
from leantrain.sampling import SamplingConfig

TEMPLATE = ("{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}Answer:{% endif %}")
TIMINGS = ("step_seconds", "generation_seconds", "train_seconds", "peak_rss_mib")


def has_e(prompts, completions, **columns):
    return [float("e" in completion) for completion in completions]


def raises(prompts, completions, **columns):
    raise RuntimeError("the checker crashed")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_lm(folder, TEMPLATE)
    return str(folder)


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {a} plus {b}?", "answer": str(a + b)}) + "\n"
                            for a in range(10) for b in range(6)))
    return str(path)


def tiny(folder, model, data, **changes) -> RLConfig:
    """``changes``: fields, or "section.field" (e.g. ``**{"engine.layout": "fsdp2"}``)."""
    config = RLConfig(model=model, data=data, held_out=8, eval_problems=8, steps=2, rollouts=4, prompts_per_step=3,
                      max_new_tokens=8, eval_every=1, engine=EngineConfig(str(folder), grad_clip=1.0),
                      optim=OptimConfig(lr=1e-3))
    return with_settings(config, changes)


def updates(folder) -> list[dict]:
    return [r for r in read_metrics(folder / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("algo", ["grpo", "dars-et", "dars-hw", "dars-b", "self"])
def test_each_algorithm_runs_two_steps(tmp_path, tiny_model, problems_file, algo):
    result = rl(tiny(tmp_path, tiny_model, problems_file, algo=algo), show_bar=False,
                reward_functions={"has_e": has_e})
    records = updates(tmp_path)
    epochs = 2 if algo == "dars-b" else 1
    assert result.steps == 2 and len(records) == 2 * epochs
    assert [r["step"] for r in result.records] == [0, epochs, 2 * epochs]
    firsts = records[::epochs]
    for record in firsts:
        for key in ("reward_mean", "reward_std", "frac_zero_std", "rollouts", "generated_tokens", "generation_seconds",
                    "train_seconds", "peak_rss_mib", "tokens_total", "entropy"):
            assert key in record and math.isfinite(record[key]), key
    assert sum(r["generated_tokens"] for r in firsts) == result.generated_tokens == records[-1]["tokens_total"]
    assert all(r["signal_rows"] <= r["gradient_rows"] <= r["trained_rows"] and r["gradient_rows"] >= 1 for r in firsts)
    if algo.startswith("dars"):
        assert all("second_saved" in r and "extra_rollouts" in r for r in firsts)
        assert all(r["rollouts"] == 3 * 4 + r["extra_rollouts"] for r in firsts)
    if algo == "self":
        assert all(r["self_checked"] >= 3 and 1 <= r["self_kept"] <= 3 for r in firsts)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algo"] == algo and summary["generated_tokens"] == result.generated_tokens


def test_dars_gives_hard_prompts_more_rollouts_and_trains_on_ragged_groups(tmp_path, tiny_model, problems_file):
    """A reward no completion earns in round 1 for half the prompts: DARS-ET tops them up to N_max, drops
    the groups that stay at accuracy 0 or 1, and trains on groups of different sizes."""

    def odd_prompts_are_hard(prompts, completions, **columns):
        return [float("e" in c and int(a) % 2 == 0) for c, a in zip(completions, columns["answer"], strict=True)]

    rl(tiny(tmp_path, tiny_model, problems_file, algo="dars-et", steps=3, max_rollouts=10), show_bar=False,
       reward_functions={"hard": odd_prompts_are_hard})
    firsts = updates(tmp_path)
    assert any(r["extra_rollouts"] > 0 for r in firsts)
    for r in firsts:
        assert r["rollouts"] <= 3 * 10 and r["trained_rows"] <= r["rollouts"]
    assert any(r["trained_rows"] % 4 != 0 or r["rollouts"] % 4 != 0 for r in firsts)  # ragged


def test_rows_at_advantage_0_are_not_trained_and_change_nothing(tmp_path, tiny_model, problems_file, monkeypatch):
    """The same two GRPO steps with the rows at advantage 0 left out (the default) and trained: the same losses
    and weights; a reward no completion earns leaves one row to train, on a loss of 0."""
    import leantrain.recipes.rl as recipe

    def trained(folder):
        return [r["loss"] for r in updates(folder)], load_policy(folder)[0].state_dict()

    rl(tiny(tmp_path / "left-out", tiny_model, problems_file, eval_every=None), show_bar=False,
       reward_functions={"has_e": has_e})
    records = updates(tmp_path / "left-out")
    assert any(r["gradient_rows"] < r["trained_rows"] for r in records)
    monkeypatch.setattr(recipe, "idle_rows_are_exact", lambda settings: False)
    rl(tiny(tmp_path / "trained", tiny_model, problems_file, eval_every=None), show_bar=False,
       reward_functions={"has_e": has_e})
    assert all(r["gradient_rows"] == r["trained_rows"] for r in updates(tmp_path / "trained"))
    (left_losses, left_weights), (losses, weights) = trained(tmp_path / "left-out"), trained(tmp_path / "trained")
    assert left_losses == pytest.approx(losses, rel=1e-4, abs=1e-6)
    for name, value in weights.items():
        torch.testing.assert_close(left_weights[name], value, rtol=1e-4, atol=1e-6, msg=name)
    monkeypatch.undo()
    rl(tiny(tmp_path / "no-signal", tiny_model, problems_file, eval_every=None), show_bar=False,
       reward_functions={"never": lambda prompts, completions, **columns: [0.0] * len(completions)})
    records = updates(tmp_path / "no-signal")
    assert [(r["gradient_rows"], r["signal_rows"], r["loss"]) for r in records] == [(1, 0, 0.0), (1, 0, 0.0)]


def test_resume_after_ctrl_c_continues_the_same_run(tmp_path, tiny_model, problems_file):
    """Ctrl-C after update 3 of a DARS-B run (2 updates per RL step) stops in the middle of RL step 2: the
    checkpoint carries its rollout batch, and the resumed run's records equal the uninterrupted run's."""
    changes = {"algo": "dars-b", "steps": 3, "eval_every": 2}
    rl(tiny(tmp_path / "straight", tiny_model, problems_file, **changes), show_bar=False,
       reward_functions={"has_e": has_e})
    config = tiny(tmp_path / "resumed", tiny_model, problems_file, **changes)

    def ctrl_c_after_update_3(record):
        if record["step"] == 3 and "loss" in record:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        rl(config, show_bar=False, on_log=ctrl_c_after_update_3, reward_functions={"has_e": has_e})
    assert len(updates(tmp_path / "resumed")) == 3
    result = rl(config, resume=True, show_bar=False, reward_functions={"has_e": has_e})
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    strip = [[{k: v for k, v in r.items() if k not in TIMINGS} for r in run] for run in (straight, resumed)]
    assert strip[1] == strip[0] and result.steps == 3


def test_a_token_budget_ends_the_run(tmp_path, tiny_model, problems_file):
    result = rl(tiny(tmp_path, tiny_model, problems_file, steps=50, token_budget=150, eval_problems=0,
                     eval_every=None),
                show_bar=False, reward_functions={"has_e": has_e})
    records = updates(tmp_path)
    assert result.steps == len(records) < 50 and result.generated_tokens >= 150
    assert records[-2]["tokens_total"] < 150 <= records[-1]["tokens_total"]
    assert [r["step"] for r in result.records] == [0, len(records)]  # eval_problems=0: records, no evaluation
    assert not any(key.startswith("heldout_") for r in result.records for key in r)


def test_a_run_folder_loads_as_its_trained_policy(tmp_path, tiny_model, problems_file):
    config = tiny(tmp_path, tiny_model, problems_file, **{"memory.lora": 2}).resolved()
    result = rl(config, show_bar=False, reward_functions={"has_e": has_e})
    model, tokenizer, loaded = load_policy(tmp_path)
    assert loaded == config
    _, held_out = prepare_problems(config)
    held_out = replace(held_out.subset(range(config.eval_problems)), reward_functions={"has_e": has_e})
    with torch.no_grad():
        again = greedy_accuracy(model, tokenizer, held_out, encode_prompts(tokenizer, held_out.prompts), config)
    assert again == {k: v for k, v in result.records[-1].items() if k.startswith("heldout_")}


def test_bad_input_gets_a_clear_error_or_is_counted(tmp_path, tiny_model, problems_file):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no problems"):
        rl(tiny(tmp_path / "a", tiny_model, str(empty)), show_bar=False)
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"prompt": "What is 1 plus 1?", "solution": "2"}) + "\n")
    with pytest.raises(ValueError, match="problem 1 has no answer column"):
        rl(tiny(tmp_path / "b", tiny_model, str(no_answer)), show_bar=False)
    with pytest.raises(ValueError, match="must be 'arithmetic', 'rg:TASK'"):
        rl(tiny(tmp_path / "c", tiny_model, "problems.txt"), show_bar=False)
    for changes, message in (({"rollouts": 0}, "rollouts=0 must be an integer >= 1"),
                             ({"rollouts": 1}, "rollouts=1 must be >= 2: a rollout's advantage is its reward minus"),
                             ({"algo": "ppo"}, "algo='ppo' is not one of grpo, dars-et"),
                             ({"max_rollouts": 2}, "max_rollouts=2 must be >= rollouts=4"),
                             ({"temperature": 0.0}, "temperature=0.0 must be > 0"),
                             ({"eval_problems": 9}, "eval_problems=9 must be <= held_out=8")):
        with pytest.raises(ValueError, match=message):
            tiny(tmp_path, tiny_model, problems_file, **changes)
    result = rl(tiny(tmp_path / "d", tiny_model, problems_file, steps=1), show_bar=False,
                reward_functions={"has_e": has_e, "raises": raises})
    record = updates(tmp_path / "d")[0]
    assert record["unscored"] == 0 and math.isfinite(record["loss"])  # has_e still scores every row
    result = rl(tiny(tmp_path / "e", tiny_model, problems_file, steps=1), show_bar=False,
                reward_functions={"raises": raises})
    record = updates(tmp_path / "e")[0]
    assert record["unscored"] == record["rollouts"] == 12 and record["frac_zero_std"] == 1.0
    assert result.records[-1]["heldout_greedy_accuracy"] == 0.0  # unscored is never correct


def test_the_command_line_trains_and_evaluates_pass_at_k(tmp_path, tiny_model, problems_file, capsys):
    run = tmp_path / "run"
    assert cli_main(["rl", "--model", tiny_model, "--data", problems_file, "--held-out", "8", "--eval-problems", "4",
                     "--steps", "1", "--rollouts", "2", "--prompts-per-step", "2", "--max-new-tokens", "4",
                     "--out", str(run)]) == 0
    assert "1 RL steps" in capsys.readouterr().out
    assert cli_main(["rl", "eval", str(run), tiny_model, "--n", "4", "--max-new-tokens", "4",
                     "--out", str(tmp_path / "eval")]) == 0
    table = (tmp_path / "eval" / "pass_at_k.md").read_text()
    assert str(run) in table and tiny_model in table and "pass@4" in table.replace(" ", "").replace("k=", "pass@")
    assert cli_main(["rl", "--model", tiny_model, "--data", problems_file, "--rollouts", "0"]) == 2
    assert "rollouts=0 must be an integer >= 1" in capsys.readouterr().err
    # a default that depends on another is derived, not refused: 64 evaluated problems, at most --held-out
    assert cli_main(["rl", "--model", tiny_model, "--data", problems_file, "--held-out", "5", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_problems"] == 5
    # the planner's parts for a micro-batch (20 rows of 51 tokens: stock ~11 MiB, lean less) in what the rollouts
    # leave (2 MiB in fp32: "auto" would take bf16 on a CPU with bf16 units, and half the KV cache), written nowhere
    assert cli_main(["rl", "--model", tiny_model, "--data", problems_file, "--held-out", "8", "--memory-budget",
                     "9MiB", "--rollout-dtype", "fp32", "--print-config", "--out", str(tmp_path / "planned")]) == 0
    printed = capsys.readouterr()
    planned = json.loads(printed.out)
    assert "rollouts: 2.0 MiB beyond the weights" in printed.err
    assert "memory plan for a budget of 7 MiB" in printed.err and "chosen" in printed.err
    assert planned["memory"]["budget"] == 9 * 2**20 and planned["memory"]["lean"] is True
    assert not (tmp_path / "planned").exists()
    assert cli_main(["rl", "--model", tiny_model, "--data", problems_file, "--held-out", "8", "--memory-budget",
                     "1MiB", "--rollout-dtype", "fp32", "--out", str(tmp_path / "refused")]) == 2
    assert "generating the rollouts alone needs 2 MiB beyond the weights, more than --memory-budget 1 MiB" in \
        capsys.readouterr().err
    assert not (tmp_path / "refused").exists()  # refused before the run folder is made


def two_step_records(config: RLConfig) -> list[dict]:
    rl(config, show_bar=False, reward_functions={"has_e": has_e})
    return [{k: v for k, v in r.items() if k not in TIMINGS}
            for r in read_metrics(f"{config.engine.output_dir}/metrics.jsonl")]


@pytest.mark.parametrize("layout", ["ddp", "fsdp2"])
def test_two_processes_give_the_one_process_run(tmp_path, tiny_model, problems_file, layout):
    """Every process logs the whole batch's sampler-trainer gap. FSDP2 generates with its own fp32 shards, so its
    runs compare with fp32 rollouts ("auto" takes a bf16 copy in one process on a CPU with bf16 units)."""
    dtype = "fp32" if layout == "fsdp2" else "auto"
    one = two_step_records(tiny(tmp_path / "one", tiny_model, problems_file, rollout_dtype=dtype))
    two = launch(two_step_records, tiny(tmp_path / "two", tiny_model, problems_file, rollout_dtype=dtype,
                                        **{"engine.layout": layout}))[0]
    assert_same_records(two, one)


COMPOSED = {
    "lora-wtacrs-lean": {"memory": MemoryOptions(lora=2, sampling=SamplingConfig.from_spec("wtacrs@0.3"), lean=True)},
    "galore": {"optim.name": "galore", "optim.rank": 4},
    "dct-bf16": {"optim.name": "dct", "optim.rank": 4, "engine.precision": "bf16"},
    "checkpointing-chunked-8bit": {"memory": MemoryOptions(checkpointing="layers", chunked_loss=True),
                                   "optim.state_bits": 8},
    "step-in-backward": {"optim.step_in_backward": True, "optim.state_bits": 8},
    "bf16-weights": {"optim.weights": "bf16", "optim.state_bits": 8},  # rollouts from the bf16 weights, no copy
    "lora-bf16-rollouts-tis": {"memory": MemoryOptions(lora=2), "rollout_dtype": "bf16", "tis": "sequence"},
    "hf-generate-token-micro-batches": {"rollout_engine": "hf", "engine.micro_tokens": 64},
}


@pytest.mark.parametrize("name", list(COMPOSED))
def test_the_recipe_composes_with_the_parts(tmp_path, tiny_model, problems_file, name):
    result = rl(tiny(tmp_path, tiny_model, problems_file, algo="dars-et", **COMPOSED[name]), show_bar=False,
                reward_functions={"has_e": has_e})
    records = updates(tmp_path)
    assert len(records) == 2 and all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in records)
    assert math.isfinite(result.records[-1]["heldout_greedy_accuracy"])
    if "rollout_engine" not in COMPOSED[name]:  # the engine records its log-probs: the mismatch is reported
        assert all(r["sampler_kl"] >= 0 and r["sampler_logprob_gap"] >= 0 for r in records)
    if "rollout_dtype" in COMPOSED[name]:  # a bf16 copy samples: its log-probs differ from the trained weights'
        assert all(r["sampler_logprob_gap"] > 0 for r in records)
