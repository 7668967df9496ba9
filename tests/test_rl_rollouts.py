"""Rollouts on tiny random causal LMs (Llama: rotary positions; GPT-2: absolute positions) on the CPU:
ragged groups, batched left-padded greedy equal to each prompt alone and to a plain argmax loop, EOS
masks and truncation, the training forward's log-probs equal to each completion scored alone, seeded
sampling, the model's generation_config kept out, prompt encoding through a chat template, bad input."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from leantrain.lean.token_logprobs import token_logprobs
from leantrain.rl.rollouts import encode_prompts, generate_rollouts

VOCAB, EOS = 40, 1
PROMPTS = [[5, 9, 12], [7, 3, 30, 22, 8, 14, 2], [11], [19, 25, 6, 33]]


def tiny_model(kind: str = "llama", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=64, bos_token_id=2, eos_token_id=EOS)).eval()
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=2, eos_token_id=EOS)).eval()


def bias_head(model: torch.nn.Module, ids: list[int], amount: float) -> None:
    """Add ``amount`` to the logits of ``ids``, so that ending is likely (or certain)."""

    def hook(module, inputs, logits):
        logits[..., ids] += amount
        return logits

    model.get_output_embeddings().register_forward_hook(hook)


def argmax_loop(model: torch.nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding by full forwards without a cache, stopping after EOS."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == EOS:
                break
    return ids[len(prompt):]


def completion(rollouts, row: int) -> list[int]:
    return rollouts.completion_ids[row, :int(rollouts.completion_lengths[row])].tolist()


def test_ragged_counts_give_those_rows_per_prompt_in_order_and_restore_each_module_mode():
    model = tiny_model().train()
    model.model.layers[0].eval()
    torch.manual_seed(0)
    rollouts = generate_rollouts(model, PROMPTS, [2, 0, 3, 1], max_new_tokens=5, batch_size=4)
    assert rollouts.group.tolist() == [0, 0, 2, 2, 2, 3] and len(rollouts) == 6
    for row, index in enumerate(rollouts.group.tolist()):
        assert rollouts.prompt_ids[row][rollouts.prompt_mask[row].bool()].tolist() == PROMPTS[index]
        assert rollouts.prompt_mask[row, -1] == 1  # left padding
    assert rollouts.prompt_ids.shape == (6, 4) and rollouts.completion_ids.shape[0] == 6
    assert model.training and model.model.layers[1].training and not model.model.layers[0].training
    none = generate_rollouts(model, PROMPTS, [0, 0, 0, 0], max_new_tokens=5)
    inputs = none.training_inputs()
    assert len(none) == 0 and inputs.input_ids.shape == (0, 1) and inputs.logprob_mask.shape == (0, 0)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_batched_left_padded_greedy_equals_each_prompt_alone_and_an_argmax_loop(kind):
    model = tiny_model(kind)
    batched = generate_rollouts(model.train(), PROMPTS, [2, 1, 1, 1], max_new_tokens=12, temperature=0.0)
    model.eval()
    rows = {index: [] for index in range(len(PROMPTS))}
    for row, index in enumerate(batched.group.tolist()):
        rows[index].append(completion(batched, row))
    for index, prompt in enumerate(PROMPTS):
        alone = generate_rollouts(model, [prompt], [1], max_new_tokens=12, temperature=0.0)
        assert alone.prompt_mask.all()  # no padding
        assert rows[index] == [completion(alone, 0)] * len(rows[index]) == [argmax_loop(model, prompt, 12)] * len(
            rows[index])


def test_masks_stop_at_and_include_the_first_eos_and_truncated_says_which_rows_were_cut():
    model = tiny_model()
    bias_head(model, [EOS, 5], 2.0)  # two end ids, each about 1 in 8 per token
    torch.manual_seed(1)
    rollouts = generate_rollouts(model, PROMPTS, [6, 6, 6, 6], max_new_tokens=6, eos_token_id=[EOS, 5],
                                 pad_token_id=0)
    seen = set()
    for row in range(len(rollouts)):
        tokens, mask = rollouts.completion_ids[row].tolist(), rollouts.completion_mask[row].tolist()
        ends = [i for i, token in enumerate(tokens) if token in (EOS, 5)]
        if ends:
            first = ends[0]
            assert mask == [1] * (first + 1) + [0] * (len(mask) - first - 1)
            assert all(token == 0 for token in tokens[first + 1:]) and not rollouts.truncated[row]
            seen.add("ended late" if first > 0 else "ended at once")
        else:
            assert mask == [1] * 6 and rollouts.truncated[row]
            seen.add("cut")
        assert rollouts.completion_lengths[row] == sum(mask)
    assert seen == {"ended late", "ended at once", "cut"}
    assert rollouts.completion_ids.shape[1] == 6
    bias_head(model, [EOS], 1e4)
    forced = generate_rollouts(model, PROMPTS, [1, 1, 1, 1], max_new_tokens=6, temperature=0.0)
    assert forced.completion_ids.tolist() == [[EOS]] * 4 and forced.completion_mask.tolist() == [[1]] * 4
    assert not forced.truncated.any()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_training_inputs_score_each_completion_as_it_scores_alone(kind):
    model = tiny_model(kind)
    bias_head(model, [EOS], 2.5)
    torch.manual_seed(2)
    rollouts = generate_rollouts(model, PROMPTS, [3, 2, 0, 3], max_new_tokens=8, batch_size=3)
    assert 0 < int(rollouts.truncated.sum()) < len(rollouts)  # ragged completion lengths
    inputs = rollouts.training_inputs()
    with torch.no_grad():
        logprobs, _ = token_logprobs(model, inputs.input_ids, inputs.attention_mask)
    assert logprobs.shape == inputs.logprob_mask.shape == (len(rollouts), inputs.input_ids.shape[1] - 1)
    assert torch.equal(inputs.logprob_mask.sum(1), rollouts.completion_lengths)
    for row, index in enumerate(rollouts.group.tolist()):
        tokens = completion(rollouts, row)
        scored = inputs.logprob_mask[row].bool()
        assert inputs.input_ids[row, 1:][scored].tolist() == tokens
        with torch.no_grad():
            alone, _ = token_logprobs(model, torch.tensor([PROMPTS[index] + tokens]))
        torch.testing.assert_close(logprobs[row][scored], alone[0, -len(tokens):], rtol=1e-5, atol=1e-5)


def test_seeded_sampling_is_reproducible():
    model = tiny_model()

    def sample(seed):
        torch.manual_seed(seed)
        return generate_rollouts(model, PROMPTS, [2, 2, 2, 2], max_new_tokens=10, temperature=1.2, top_p=0.9,
                                 top_k=20, batch_size=3)

    first, again, other = sample(3), sample(3), sample(4)
    for field in ("group", "prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(first, field), getattr(again, field)), field
    assert not torch.equal(first.completion_ids, other.completion_ids)


def test_the_models_generation_config_does_not_reshape_rollouts():
    model = tiny_model()
    torch.manual_seed(5)
    plain = generate_rollouts(model, PROMPTS, [2, 2, 2, 2], max_new_tokens=10)
    greedy = generate_rollouts(model, PROMPTS, [1, 1, 1, 1], max_new_tokens=10, temperature=0.0)
    for name, value in {"repetition_penalty": 3.0, "no_repeat_ngram_size": 2, "min_new_tokens": 10, "min_length": 30,
                        "temperature": 0.3, "top_k": 3, "typical_p": 0.5, "do_sample": True}.items():
        setattr(model.generation_config, name, value)
    torch.manual_seed(5)
    assert torch.equal(generate_rollouts(model, PROMPTS, [2, 2, 2, 2], max_new_tokens=10).completion_ids,
                       plain.completion_ids)
    assert torch.equal(generate_rollouts(model, PROMPTS, [1, 1, 1, 1], max_new_tokens=10,
                                         temperature=0.0).completion_ids, greedy.completion_ids)


@pytest.mark.parametrize(("prompts", "counts", "options", "message"), [
    ([], [], {}, "no prompts"),
    (PROMPTS, [1, 1], {}, "counts has 2 entries for 4 prompts"),
    (PROMPTS, [1, -1, 1, 1], {}, r"counts\[1\]=-1 must be an integer >= 0"),
    (PROMPTS, [1, 1.0, 1, 1], {}, r"counts\[1\]=1.0"),
    ([[3], []], [1, 1], {}, r"prompt_ids\[1\] is empty"),
    ([[3], [4] * 60], [1, 1], {}, r"prompt_ids\[1\] has 60 tokens; with max_new_tokens=5 that exceeds the "
                                  r"model's 64 positions"),
    (PROMPTS, [1, 1, 1, 1], {"max_new_tokens": 0}, "max_new_tokens=0 must be an integer >= 1"),
    (PROMPTS, [1, 1, 1, 1], {"batch_size": 0}, "batch_size=0"),
    (PROMPTS, [1, 1, 1, 1], {"temperature": -1.0}, r"temperature=-1.0 must be >= 0 \(0: greedy\)"),
    (PROMPTS, [1, 1, 1, 1], {"temperature": 0.0, "top_p": 0.9}, "temperature=0 is greedy, which takes no top_p"),
    (PROMPTS, [1, 1, 1, 1], {"top_p": 0.0}, "top_p=0.0"),
    (PROMPTS, [1, 1, 1, 1], {"top_k": -1}, "top_k=-1"),
    (PROMPTS, [1, 1, 1, 1], {"eos_token_id": -1}, "eos_token_id=-1 must be a token id"),
    (PROMPTS, [1, 1, 1, 1], {"eos_token_id": []}, r"eos_token_id=\[\] must be a token id"),
    (PROMPTS, [1, 1, 1, 1], {"pad_token_id": [0, 1]}, r"pad_token_id=\[0, 1\] must be one token id"),
])
def test_bad_input_is_refused_by_name(prompts, counts, options, message):
    with pytest.raises(ValueError, match=message):
        generate_rollouts(tiny_model(), prompts, counts, **{"max_new_tokens": 5, **options})


def test_a_generation_config_that_reshapes_sampling_or_gives_no_pad_is_refused():
    model = tiny_model()
    model.generation_config.suppress_tokens = [4]
    with pytest.raises(ValueError, match=r"model.generation_config.suppress_tokens=\[4\] would change"):
        generate_rollouts(model, PROMPTS, [1, 1, 1, 1], max_new_tokens=5)
    model = tiny_model()
    model.generation_config.eos_token_id = None
    with pytest.raises(ValueError, match="pad_token_id=None and the model's generation_config has no pad or EOS"):
        generate_rollouts(model, PROMPTS, [1, 1, 1, 1], max_new_tokens=5)
    rollouts = generate_rollouts(model, PROMPTS, [1, 1, 1, 1], max_new_tokens=5, pad_token_id=0)
    assert rollouts.truncated.all() and rollouts.completion_mask.all()  # no EOS: every row runs to the end


TEMPLATE = ("[BOS] {% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
WORDS = ["[PAD]", "[EOS]", "[BOS]", "[UNK]", "<user>", "<assistant>", "<system>", "what", "is", "two", "plus",
         "three", "be", "brief"]


def tokenizer(chat_template: str | None = TEMPLATE) -> PreTrainedTokenizerFast:
    words = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    result = PreTrainedTokenizerFast(tokenizer_object=words, bos_token="[BOS]", eos_token="[EOS]",
                                     pad_token="[PAD]", unk_token="[UNK]")
    result.chat_template = chat_template
    return result


def ids(text: str) -> list[int]:
    return [WORDS.index(word) for word in text.split()]


def test_prompts_go_through_the_chat_template_with_the_generation_prompt_or_as_plain_text():
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two plus three"}]
    assert encode_prompts(tokenizer(), ["what is two plus three", conversation]) == [
        ids("[BOS] <user> what is two plus three <assistant>"),
        ids("[BOS] <system> be brief <user> two plus three <assistant>")]
    assert encode_prompts(tokenizer(), ["what is two", "three"], chat=False) == [ids("[BOS] what is two"),
                                                                                  ids("[BOS] three")]


def test_bad_prompts_are_refused_by_name():
    with pytest.raises(ValueError, match="has no chat_template: pass chat=False"):
        encode_prompts(tokenizer(chat_template=None), ["two"])
    with pytest.raises(ValueError, match=r"prompts\[1\] is list: with chat=False every prompt is a string"):
        encode_prompts(tokenizer(), ["two", [{"role": "user", "content": "two"}]], chat=False)
    for prompts in ([], "two plus three"):
        with pytest.raises(ValueError, match="prompts must be a non-empty list"):
            encode_prompts(tokenizer(), prompts)
