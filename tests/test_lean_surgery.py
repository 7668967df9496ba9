"""apply_lean / remove_lean on tiny random BERT, Llama, GPT-2 and T5: in place, same parameters,
same losses and gradients, fewer saved bytes, and a clean round trip."""

import copy
import io

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from leantrain.lean import LeanConfig, apply_lean, lean_modules, remove_lean
from leantrain.memory import saved_tensor_bytes
from leantrain.models.presets import build_model, random_batch

EXPECTED = {  # companions each model must get; the chunked LM loss only for causal LMs
    "bert-tiny": {"LeanDropout", "LeanLayerNorm", "RecomputedModule(BertIntermediate)",
                  "RecomputedModule(BertAttention)"},
    "llama-tiny": {"LeanRMSNorm", "RecomputedModule(LlamaMLP)", "RecomputedModule(LlamaAttention)"},
    "gpt2-tiny": {"LeanDropout", "LeanLayerNorm", "RecomputedModule(GPT2MLP)", "RecomputedModule(GPT2Attention)"},
    "t5-tiny": {"LeanDropout", "LeanRMSNorm", "LeanReLU", "RecomputedModule(T5DenseActDense)",
                "RecomputedModule(T5LayerSelfAttention)", "RecomputedModule(T5LayerCrossAttention)"},
}
CAUSAL = {"llama-tiny", "gpt2-tiny"}


def model_and_batch(name):
    if name != "t5-tiny":
        model = build_model(name)
        return model, random_batch(model, 2, 16)
    torch.manual_seed(0)  # T5 (relative position bias passed to attention, ReLU FFN with dropout)
    config = T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, vocab_size=100, use_cache=False,
                      decoder_start_token_id=0, pad_token_id=0, attn_implementation="eager")
    batch = {"input_ids": torch.randint(100, (2, 12)), "labels": torch.randint(100, (2, 6))}
    return T5ForConditionalGeneration(config).train(), batch


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", EXPECTED)
def test_round_trip_keeps_parameters_outputs_and_gradients(name):
    model, batch = model_and_batch(name)
    keys, params = list(model.state_dict()), list(model.parameters())
    model.eval()  # dropout off, so the stock and lean steps are comparable exactly
    stock_loss, stock_grads = loss_and_grads(model, batch)
    model.train()
    stock_saved = saved_tensor_bytes(model, batch).total

    changed = apply_lean(model)
    assert EXPECTED[name] <= set(changed.values())
    assert changed["config._attn_implementation"] == "eager -> leantrain_recompute"
    assert ("forward" in changed) == (name in CAUSAL)
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert saved_tensor_bytes(model, batch).total < 0.5 * stock_saved
    model.eval()
    lean_loss, lean_grads = loss_and_grads(model, batch)
    torch.testing.assert_close(lean_loss, stock_loss, rtol=1e-6, atol=1e-6)
    for key, grad in stock_grads.items():
        torch.testing.assert_close(lean_grads[key], grad, rtol=1e-4, atol=1e-6)
    assert apply_lean(model) == {}  # already lean

    restored = remove_lean(model)
    assert set(restored) == set(changed) and lean_modules(model) == {}
    assert model.config._attn_implementation == "eager" and "forward" not in model.__dict__
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    again_loss, again_grads = loss_and_grads(model, batch)
    assert torch.equal(again_loss, stock_loss)
    assert all(torch.equal(again_grads[key], grad) for key, grad in stock_grads.items())


def test_config_and_filter_select_what_changes():
    model = build_model("bert-tiny")
    only_norms = LeanConfig(dropout=False, attention=False, recompute_mlp=False, recompute_attention=False,
                            activations=False, lm_loss=False)
    changed = apply_lean(model, only_norms, filter_fn=lambda module, name: "layer.0." in name)
    assert set(changed) == {"bert.encoder.layer.0.attention.output.LayerNorm", "bert.encoder.layer.0.output.LayerNorm"}
    with pytest.raises(ValueError, match="LeanConfig"):
        apply_lean(model, {"dropout": True})


def test_a_lean_model_pickles_and_stays_lean():
    model = build_model("llama-tiny")
    apply_lean(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copy = torch.load(buffer, weights_only=False)
    assert lean_modules(copy).keys() == lean_modules(model).keys()
    batch = random_batch(model, 2, 8)
    model.eval()
    copy.eval()
    assert torch.equal(model(**batch).loss, copy(**batch).loss)
    assert copy.forward.args[0] is copy  # the chunked-loss forward is bound to the copy, not the original
    assert remove_lean(copy)["forward"] == "LlamaForCausalLM.forward"


def test_lean_recomputes_blocks_holding_sampled_layers_and_the_rerun_draws_the_same_rows():
    import leantrain as lt

    reference = build_model("bert-tiny").train()
    for module in reference.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # the sampling is then the only randomness in a training step
    lean, other_seed = copy.deepcopy(reference), copy.deepcopy(reference)
    batch = random_batch(reference, 2, 16)
    for model, seed in ((reference, 0), (lean, 0), (other_seed, 1)):
        lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, seed=seed), targets="paper")
    changed = apply_lean(lean)
    assert changed["bert.encoder.layer.0.intermediate"] == "RecomputedModule(BertIntermediate)"
    assert changed["bert.encoder.layer.0.attention"] == "RecomputedModule(BertAttention)"
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    for _ in range(2):  # the second step draws with the next seeds, in both models alike
        reference_loss, reference_grads = loss_and_grads(reference, batch)
        lean_loss, lean_grads = loss_and_grads(lean, batch)
        _, other_grads = loss_and_grads(other_seed, batch)
        torch.testing.assert_close(lean_loss, reference_loss)
        for key, grad in reference_grads.items():
            torch.testing.assert_close(lean_grads[key], grad, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(other_grads[name], reference_grads[name])  # the rows drawn do matter
    remove_lean(lean)
    lt.remove_sampling(lean)


def test_a_lean_model_is_measured_in_a_fresh_process():
    from leantrain.memory import measure_memory

    model, batch = model_and_batch("bert-tiny")
    apply_lean(model, LeanConfig(recompute_mlp=False))
    report = measure_memory(model, batch, torch.optim.AdamW(model.parameters()))  # pickled to a spawned child
    assert report.peak is not None and report.peak.step_bytes >= report.optimizer_state_bytes


def test_a_model_whose_attention_the_lean_one_cannot_compute_keeps_its_own():
    """Gemma 2 soft-caps its attention logits: apply_lean keeps its eager attention (and says so), swaps in the
    rest, and the model trains as the stock one does."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, attn_logit_softcapping=50.0,
                          final_logit_softcapping=30.0, attn_implementation="eager", use_cache=False)
    torch.manual_seed(0)
    stock = Gemma2ForCausalLM(config)
    lean = copy.deepcopy(stock)
    changed = apply_lean(lean)
    kept = [what for name, what in changed.items() if name.endswith("_attn_implementation")]
    assert kept and all(what.startswith("kept (attn_logit_softcapping") for what in kept)
    ids = torch.randint(100, (2, 12), generator=torch.Generator().manual_seed(0))
    for model in (stock, lean):
        model(input_ids=ids, labels=ids).loss.backward()
    for (name, a), b in zip(lean.named_parameters(), stock.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
