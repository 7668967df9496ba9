"""Fixed-length continuations and the citation blocker on tiny random causal LMs, and greedy
generation under every conversion (LoRA at init, sampled layers and lean companions are exact in
eval mode, so the tokens must equal the stock model's)."""

import itertools

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import leantrain as lt
from leantrain.generation import CitationBlocker, Decoding, continue_contexts
from leantrain.metrics import longest_copied_span


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        eos_token_id=1, attn_implementation="eager")).eval()


def contexts(n=5, length=6, seed=0):
    return torch.randint(2, 40, (n, length), generator=torch.Generator().manual_seed(seed))


def test_continuations_have_the_asked_length_and_batching_does_not_change_greedy():
    model = tiny_llama()
    whole = continue_contexts(model, contexts(), 12, batch_size=5)
    assert whole.shape == (5, 12)
    assert torch.equal(continue_contexts(model, contexts(), 12, batch_size=2), whole)


def test_end_of_sequence_is_suppressed_until_the_last_token():
    model = tiny_llama()
    with torch.no_grad():  # make the end token (id 1) the model's favourite
        model.lm_head.weight[1] += 5 * model.lm_head.weight.abs().max()
    out = continue_contexts(model, contexts(), 10)
    assert out.shape == (5, 10) and not (out == 1).any()


def test_sampling_is_seeded_and_differs_from_greedy():
    model = tiny_llama()
    sampling = Decoding(sample=True, temperature=1.5, top_k=0, top_p=1.0)
    torch.manual_seed(3)
    first = continue_contexts(model, contexts(), 12, sampling)
    torch.manual_seed(3)
    assert torch.equal(continue_contexts(model, contexts(), 12, sampling), first)
    assert not torch.equal(first, continue_contexts(model, contexts(), 12))


def test_bad_decoding_settings_and_lengths_are_refused():
    with pytest.raises(ValueError, match="top_p=0"):
        Decoding(sample=True, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        Decoding(sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="exceed the model's context of 64"):
        continue_contexts(tiny_llama(), contexts(length=10), 60)
    with pytest.raises(ValueError, match="new_tokens=0"):
        continue_contexts(tiny_llama(), contexts(), 0)


def test_citation_blocker_masks_the_tokens_that_followed_in_training():
    blocker = CitationBlocker([[1, 2, 3, 4], [7, 2, 3, 9]], m=2)
    scores = blocker(torch.tensor([[5, 2, 3], [5, 3, 2]]), torch.zeros(2, 10))
    assert torch.isinf(scores[0, [4, 9]]).all() and torch.isfinite(scores[0, [0, 1, 2, 3, 5, 6, 7, 8]]).all()
    assert torch.isfinite(scores[1]).all()  # (3, 2) never occurs in training
    with pytest.raises(ValueError, match="m=0"):
        CitationBlocker([[1, 2]], m=0)


def test_citation_blocker_bounds_the_longest_copied_span():
    model = tiny_llama()
    training = continue_contexts(model, contexts(seed=1), 30).tolist()  # the model's own greedy text
    free = continue_contexts(model, contexts(seed=1), 30).tolist()
    assert max(longest_copied_span(row, training) for row in free) == 30
    m = 3
    blocked = continue_contexts(model, contexts(seed=1), 30, logits_processor=CitationBlocker(training, m)).tolist()
    assert max(longest_copied_span(row, training) for row in blocked) <= m


CELLS = list(itertools.product((False, True), (None, "paper", "all-linear"), (False, True)))


@pytest.mark.parametrize(("lora", "targets", "lean"), CELLS,
                         ids=[f"{'lora' if lo else 'full'}-{t or 'exact'}-{'lean' if le else 'stock'}"
                              for lo, t, le in CELLS])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_continuations_under_conversions_equal_the_stock_model(family, lora, targets, lean):
    def build():
        if family == "llama":
            return tiny_llama()
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                          eos_token_id=1, attn_implementation="eager")).eval()

    reference = continue_contexts(build(), contexts(), 10)
    model = build()
    if lora:
        lt.apply_lora(model, rank=4, targets="all-linear", dropout=0.0)
    if targets is not None:
        lt.apply_sampling(model, lt.SamplingConfig("wtacrs", 0.3, seed=0), targets)
    if lean:
        lt.apply_lean(model)
    model.eval()
    assert torch.equal(continue_contexts(model, contexts(), 10), reference)
