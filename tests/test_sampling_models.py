"""apply_sampling / remove_sampling on stock HF models (random init from configs) and PEFT LoRA."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

import leantrain as lt

VOCAB, LAYERS = 64, 2


def bert():
    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=64, num_labels=3, attn_implementation="eager"))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=LAYERS, n_head=2, n_positions=32))


def llama():
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64))


def t5():
    return T5ForConditionalGeneration(T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=LAYERS, num_heads=2,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0))


def batch_for(family):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (4, 12), generator=g)
    if family == "bert":
        return {"input_ids": ids, "labels": torch.tensor([0, 1, 2, 1])}
    if family == "t5":
        return {"input_ids": ids, "labels": torch.randint(1, VOCAB, (4, 6), generator=g)}
    return {"input_ids": ids, "labels": ids}


# 3 layers per block: attention output + the two FFN matrices (T5 gated: wi_0, wi_1, wo plus o).
PAPER_COUNTS = {"bert": 3 * LAYERS, "gpt2": 3 * LAYERS, "llama": 4 * LAYERS, "t5": 4 * LAYERS + 5 * LAYERS}
FAMILIES = {"bert": bert, "gpt2": gpt2, "llama": llama, "t5": t5}


@pytest.mark.parametrize("family", FAMILIES)
def test_paper_preset_converts_attention_output_and_ffn_only(family):
    model = FAMILIES[family]()
    names = lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3))
    assert len(names) == PAPER_COUNTS[family]
    assert not any(part in name for name in names for part in ("query", "key", "value", "q_proj", "k_proj",
                                                                "v_proj", "c_attn", ".q", ".k", ".v"))
    assert set(lt.sampled_layers(model)) == set(names)


@pytest.mark.parametrize("targets", ["paper", "all-linear"])
@pytest.mark.parametrize("family", FAMILIES)
def test_apply_remove_round_trips(family, targets):
    model = FAMILIES[family]()
    params_before = dict(model.named_parameters())
    modules_before = dict(model.named_modules())
    keys_before = list(model.state_dict())
    batch = batch_for(family)
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits

    names = lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, seed=0), targets=targets)
    assert list(model.state_dict()) == keys_before
    assert all(p is params_before[n] for n, p in model.named_parameters())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)  # eval mode is the stock forward

    assert sorted(lt.remove_sampling(model)) == sorted(names)
    assert all(model.get_submodule(n) is modules_before[n] for n in names)  # the original objects
    assert not lt.sampled_layers(model)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


def test_all_linear_skips_the_output_embedding():
    model = gpt2()
    names = lt.apply_sampling(model, lt.SamplingConfig(), targets="all-linear")
    assert "lm_head" not in names and len(names) == 4 * LAYERS


def test_reapplying_changes_the_config_in_place():
    model = llama()
    lt.apply_sampling(model, lt.SamplingConfig("crs", 0.5))
    lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.1))
    assert {layer.sampler.config.method for layer in lt.sampled_layers(model).values()} == {"wtacrs"}
    assert len(lt.remove_sampling(model)) == PAPER_COUNTS["llama"]


def test_peft_lora_samples_only_the_lora_a_inputs_and_round_trips():
    model = get_peft_model(bert(), LoraConfig(r=4, target_modules=["query", "key", "value"], lora_dropout=0.1))
    names = lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, seed=0))
    assert len(names) == 3 * LAYERS and all(".lora_A." in n for n in names)
    model.train()
    model(**batch_for("bert")).loss.backward()
    assert all(lt.sampled_layers(model)[n].weight.grad is not None for n in names)
    assert len(lt.remove_sampling(model)) == 3 * LAYERS


@pytest.mark.parametrize("importance", ["norm", "running", "cached"])
@pytest.mark.parametrize("family", FAMILIES)
def test_training_with_sampled_gradients_lowers_the_loss(family, importance):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, importance=importance, seed=0), targets="all-linear")
    batch = batch_for(family)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        with lt.sample_ids(model, torch.arange(4)):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("importance", ["running", "cached"])
def test_resuming_from_saved_sampling_state_continues_bit_identically(importance, tmp_path):
    from safetensors.torch import load_file, save_file

    def fresh():
        torch.manual_seed(0)
        model = llama()
        lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, importance=importance, seed=5), "all-linear")
        return model, torch.optim.SGD(model.parameters(), lr=0.05)

    def train(model, optimizer, steps):
        batch = batch_for("llama")
        for _ in range(steps):
            optimizer.zero_grad()
            with lt.sample_ids(model, torch.arange(4)):
                model(**batch).loss.backward()
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    model, optimizer = fresh()
    train(model, optimizer, 3)
    save_file(model.state_dict() | {f"sampling/{k}": v for k, v in lt.sampling_state_dict(model).items()},
              tmp_path / "ckpt.safetensors")
    uninterrupted = train(model, optimizer, 3)

    resumed, optimizer = fresh()
    saved = load_file(tmp_path / "ckpt.safetensors")
    resumed.load_state_dict({k: v for k, v in saved.items() if not k.startswith("sampling/")}, strict=False)
    lt.load_sampling_state_dict(resumed, {k[9:]: v for k, v in saved.items() if k.startswith("sampling/")})
    for got, want in zip(train(resumed, optimizer, 3), uninterrupted, strict=True):
        assert torch.equal(got, want)


def test_loading_sampling_state_into_a_different_model_is_refused():
    model = llama()
    lt.apply_sampling(model, lt.SamplingConfig(importance="running"))
    with pytest.raises(ValueError, match="belongs to no sampled layer"):
        lt.load_sampling_state_dict(model, {"encoder.layer.0.output.dense.source.average": torch.ones(3)})
