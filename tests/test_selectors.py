"""One selector vocabulary: apply_lora, apply_sampling, apply_lean and param_groups choose layers alike,
and optimizers built before or after a conversion see the same groups."""

import pickle

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

import leantrain as lt
from leantrain.module_names import find_targets
from leantrain.optim import build_optimizer, param_groups

LAYERS = 2


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=LAYERS,
                                        num_attention_heads=2, num_key_value_heads=1, intermediate_size=64))


def bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=LAYERS,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=3))


def same_groups(a, b):
    return len(a) == len(b) and all(
        len(x["params"]) == len(y["params"]) and all(p is q for p, q in zip(x["params"], y["params"], strict=True))
        and {k: v for k, v in x.items() if k != "params"} == {k: v for k, v in y.items() if k != "params"}
        for x, y in zip(a, b, strict=True))


def test_low_rank_optimizer_after_sampling_keeps_every_matrix_low_rank():
    # regression: SampledLinear is neither nn.Linear nor Conv1D, and param_groups gave it plain AdamW (6 of 14)
    model = llama()
    lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, seed=0), targets="paper")
    optimizer = build_optimizer("galore", model, lr=1e-3, rank=4)
    low_rank = [p for group in optimizer.param_groups if "rank" in group for p in group["params"]]
    assert len(low_rank) == 7 * LAYERS
    assert all(any(p is layer.weight for p in low_rank) for layer in lt.sampled_layers(model).values())


@pytest.mark.parametrize(("family", "lora"), [("bert", None), ("bert", 4), ("llama", None), ("llama", 4)])
def test_groups_are_the_same_before_and_after_sampling_and_lean(family, lora):
    model = bert() if family == "bert" else llama()
    if lora:
        lt.apply_lora(model, rank=lora, targets="all-linear")
    before = param_groups(model, rank=2, update_proj_gap=3)
    lt.apply_sampling(model, lt.SamplingConfig(seed=0), targets="all-linear")
    assert same_groups(param_groups(model, rank=2, update_proj_gap=3), before)
    lt.apply_lean(model)
    assert same_groups(param_groups(model, rank=2, update_proj_gap=3), before)
    lt.remove_lean(model)
    lt.remove_sampling(model)
    assert same_groups(param_groups(model, rank=2, update_proj_gap=3), before)


def test_all_linear_means_one_thing_everywhere():
    model = bert()
    chosen = find_targets(model, "all-linear")
    assert "classifier" not in chosen and "bert.pooler.dense" in chosen and len(chosen) == 6 * LAYERS + 1
    assert list(lt.apply_sampling(model, lt.SamplingConfig(), targets="all-linear")) == chosen
    _, low_rank = param_groups(model, rank=2)
    assert [p for p in low_rank["params"]] == [model.get_submodule(n).weight for n in chosen]
    causal = llama()
    assert "lm_head" not in find_targets(causal, "all-linear") and len(find_targets(causal, "all-linear")) == 14


def test_lora_takes_the_same_selector_and_paper_then_means_the_lora_a_matrices():
    model = bert()
    adapted = lt.apply_lora(model, rank=2, targets="paper", filter_fn=lambda module, name: ".0." in name)
    assert list(adapted) == [f"bert.encoder.layer.0.{m}" for m in ("attention.output.dense", "intermediate.dense",
                                                                   "output.dense")]
    assert find_targets(model, "paper") == [f"{name}.lora_A.default" for name in adapted]
    _, low_rank = param_groups(model, rank=2, targets="paper")
    assert len(low_rank["params"]) == 3


def test_lean_takes_patterns_and_filter_fn_but_no_preset():
    model = bert()
    config = lt.LeanConfig(attention=False, recompute_mlp=False, recompute_attention=False)
    changed = lt.apply_lean(model, config, targets=[r"bert\.encoder\.layer\.1\..*"],
                            filter_fn=lambda module, name: "LayerNorm" in name)
    assert sorted(changed) == [f"bert.encoder.layer.1.{m}.LayerNorm" for m in ("attention.output", "output")]
    with pytest.raises(ValueError, match="targets='all-linear' must be a list of module-name patterns"):
        lt.apply_lean(bert(), targets="all-linear")
    with pytest.raises(ValueError, match="filter_fn must be a callable"):
        lt.apply_lean(bert(), filter_fn="LayerNorm")


def test_prepare_applies_lora_sampling_lean_in_order_and_reports_each():
    model = bert()
    report = lt.prepare(model, lora=4, sampling=lt.SamplingConfig("wtacrs", 0.3, seed=0), lean=True)
    assert list(report) == ["lora", "sampling", "lean"]
    assert all(".lora_A." in name for name in report["sampling"])  # sampling found the LoRA A matrices
    assert report["lean"] and lt.lean_modules(model)
    assert lt.prepare(bert()) == {}
    assert lt.prepare(bert(), lora=4) == lt.MemoryOptions(lora=4).apply(bert())  # lt.prepare is MemoryOptions.apply


def test_conversions_are_picklable_and_replay_the_same_changes():
    steps = lt.MemoryOptions(lora=4, sampling=lt.SamplingConfig("crs", 0.5, seed=1), lean=True).conversions()
    assert [step.name for step in steps] == ["lora", "sampling", "lean"]
    replayed = pickle.loads(pickle.dumps(steps))
    first, second = bert(), bert()
    assert [step(first) for step in steps] == [step(second) for step in replayed]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lora": 0}, r"MemoryOptions\.lora=0 must be None or an integer >= 1"),
    ({"lora": True}, r"MemoryOptions\.lora=True must be None or an integer >= 1"),
    ({"sampling": "wtacrs@0.3"}, r"MemoryOptions\.sampling must be a SamplingConfig or None, got 'wtacrs@0\.3'"),
    ({"lean": "yes"}, r"MemoryOptions\.lean='yes' must be True or False"),
])
def test_prepare_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lt.prepare(bert(), **kwargs)


def test_lora_after_sampling_is_refused():
    model = bert()
    lt.apply_sampling(model, lt.SamplingConfig(), targets="paper")
    with pytest.raises(ValueError, match="apply LoRA before apply_sampling"):
        lt.apply_lora(model, rank=2, targets="paper")
