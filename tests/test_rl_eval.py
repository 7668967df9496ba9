"""pass@k evaluation on a tiny random Llama on the CPU: the ks, correct counts equal to ones counted by hand
from the same seeded rollouts (whatever the chunking), seeds, unscored completions, the curve against
``pass_at_k`` itself, the report's three files, and bad input refused by name."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from leantrain.data.problems import Problems
from leantrain.recipes.rl_eval import (
    CorrectCounts,
    count_correct,
    ks_up_to,
    pass_at_k_curve,
    write_pass_at_k_report,
)
from leantrain.rl.pass_at_k import pass_at_k
from leantrain.rl.rollouts import encode_prompts, generate_rollouts

VOCAB, EOS = 40, 1
WORDS = ["[PAD]", "[EOS]", "[BOS]"] + [f"w{i}" for i in range(3, VOCAB)]
PROMPTS = ["w5 w9 w12", "w7 w3 w30 w22 w8", "w11", "w19 w25 w6 w33", "w14 w14"]
ANSWERS = ["w7", "w20", "w33", None, "w9"]  # None: the reward is not applicable, so never scored


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        bos_token_id=2, eos_token_id=EOS)).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    words = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="w3"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=words, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]")


def says_the_answer(prompts, completions, answer, **columns):
    """1.0 when the completion contains the answer's word, None when there is no answer."""
    return [None if word is None else float(word in text.split()) for text, word in zip(completions, answer,
                                                                                        strict=True)]


def broken(prompts, completions, **columns):
    raise RuntimeError("this checker is broken")


def problems(reward=says_the_answer) -> Problems:
    return Problems(list(PROMPTS), {"answer": list(ANSWERS)}, {"reward": reward}, "tiny")


SETTINGS = {"max_new_tokens": 8, "temperature": 1.3, "top_p": 0.95}


def by_hand(model, tokenizer, n: int, batch_size: int, seed: int) -> tuple[list[int], int]:
    """Correct completions per problem and generated tokens, from one seeded generate_rollouts call."""
    torch.manual_seed(seed)
    rollouts = generate_rollouts(model, encode_prompts(tokenizer, PROMPTS, chat=False), [n] * len(PROMPTS),
                                 batch_size=batch_size, **SETTINGS)
    correct = [0] * len(PROMPTS)
    for row, group in enumerate(rollouts.group.tolist()):
        text = tokenizer.decode(rollouts.completion_ids[row][rollouts.completion_mask[row].bool()].tolist(),
                                skip_special_tokens=True)
        correct[group] += ANSWERS[group] is not None and ANSWERS[group] in text.split()
    return correct, int(rollouts.completion_mask.sum())


def test_ks_are_powers_of_two_up_to_n_then_n():
    assert ks_up_to(1) == [1]
    assert ks_up_to(2) == [1, 2]
    assert ks_up_to(8) == [1, 2, 4, 8]
    assert ks_up_to(12) == [1, 2, 4, 8, 12]
    assert ks_up_to(100) == [1, 2, 4, 8, 16, 32, 64, 100]


@pytest.mark.parametrize(("n", "batch_size"), [(4, 6), (8, 8), (6, 4), (3, 64)])
def test_counts_equal_those_counted_by_hand_from_one_seeded_rollout_call(n, batch_size):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    counts = count_correct(model, tokenizer, problems(), n, batch_size=batch_size, seed=7, chat=False, **SETTINGS)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left as it was
    correct, tokens = by_hand(model, tokenizer, n, batch_size, seed=7)
    assert counts.correct.tolist() == correct and counts.generated_tokens == tokens
    assert counts.n == n and counts.seconds > 0
    assert counts.correct.dtype == counts.scored.dtype == torch.int64
    assert counts.correct.shape == counts.scored.shape == (len(PROMPTS),)
    assert counts.scored.tolist() == [0 if answer is None else n for answer in ANSWERS]
    assert ((counts.correct >= 0) & (counts.correct <= counts.scored)).all()


def test_the_same_seed_gives_the_same_counts_and_other_seeds_other_samples():
    model, tokenizer = tiny_model(), tiny_tokenizer()

    def run(seed):
        counts = count_correct(model, tokenizer, problems(), 8, seed=seed, chat=False, batch_size=16, **SETTINGS)
        return counts.correct.tolist(), counts.generated_tokens

    first = run(0)
    assert 0 < sum(first[0]) < 8 * 4  # some completions right, some wrong
    assert run(0) == first
    assert any(run(seed) != first for seed in (1, 2, 3))


def test_a_reward_function_that_raises_leaves_its_completions_unscored_and_not_correct():
    counts = count_correct(tiny_model(), tiny_tokenizer(), problems(broken), 4, chat=False, show_progress=True,
                           **SETTINGS)
    assert counts.scored.tolist() == [0] * len(PROMPTS) and counts.correct.tolist() == [0] * len(PROMPTS)
    assert pass_at_k_curve(counts) == {1: 0.0, 2: 0.0, 4: 0.0}


def test_the_curve_is_pass_at_k_itself_non_decreasing_and_starts_at_the_mean_accuracy():
    correct = torch.tensor([0, 3, 12, 1, 7, 12], dtype=torch.long)
    counts = CorrectCounts(n=12, correct=correct, scored=torch.full((6,), 12), generated_tokens=0, seconds=0.0)
    curve = pass_at_k_curve(counts)
    assert list(curve) == [1, 2, 4, 8, 12]
    for k, value in curve.items():
        assert value == pass_at_k(12, correct.numpy(), k)
        assert value == pytest.approx(np.mean([1 - math.comb(12 - c, k) / math.comb(12, k) for c in correct.tolist()]))
    values = list(curve.values())
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert curve[1] == pytest.approx(correct.float().mean().item() / 12)
    assert curve[12] == pytest.approx(5 / 6)  # every problem with a correct sample
    assert pass_at_k_curve(counts, [3, 1]) == {3: pass_at_k(12, correct.numpy(), 3), 1: curve[1]}


def test_the_report_writes_a_table_json_and_a_plot(tmp_path):
    curves = {"base": {1: 0.1234, 2: 0.2, 4: 0.35}, "step 200|rl": {1: 0.3, 2: 0.45, 4: 0.6, 8: 0.7}}
    settings = {"n": 8, "temperature": 1.0, "problems": 64, "max_new_tokens": 32, "seed": 0}
    paths = write_pass_at_k_report(curves, tmp_path / "eval", title="pass@k on arithmetic", settings=settings)
    assert set(paths) == {"md", "json", "png"} and all(path.is_file() for path in paths.values())
    table = paths["md"].read_text()
    assert "| checkpoint | pass@1 | pass@2 | pass@4 | pass@8 |" in table
    assert "| base | 0.123 | 0.200 | 0.350 |  |" in table
    assert "| step 200\\|rl | 0.300 | 0.450 | 0.600 | 0.700 |" in table
    assert "n = 8 samples per problem at temperature 1, 64 problems, at most 32 new tokens; seed 0." in table
    record = json.loads(paths["json"].read_text())
    assert record["title"] == "pass@k on arithmetic" and record["settings"] == settings
    assert {label: {int(k): v for k, v in curve.items()} for label, curve in record["curves"].items()} == curves
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_refused_by_name(tmp_path):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    with pytest.raises(ValueError, match=r"n=0 must be an integer >= 1"):
        count_correct(model, tokenizer, problems(), 0, chat=False)
    with pytest.raises(ValueError, match=r"temperature=0 must be > 0: pass@k is estimated from n sampled"):
        count_correct(model, tokenizer, problems(), 4, temperature=0, chat=False)
    with pytest.raises(ValueError, match=r"batch_size=0"):
        count_correct(model, tokenizer, problems(), 4, batch_size=0, chat=False)
    counts = CorrectCounts(n=4, correct=torch.tensor([1, 2]), scored=torch.tensor([4, 4]), generated_tokens=0,
                           seconds=0.0)
    with pytest.raises(ValueError, match=r"k=8 exceeds n=4"):
        pass_at_k_curve(counts, [1, 8])
    with pytest.raises(ValueError, match=r"k=0 must be an integer >= 1"):
        pass_at_k_curve(counts, [0])
    with pytest.raises(ValueError, match=r"ks is empty"):
        pass_at_k_curve(counts, [])
    with pytest.raises(ValueError, match=r"n=0 must be an integer >= 1"):
        ks_up_to(0)
    settings = {"n": 4, "temperature": 1.0, "problems": 2, "max_new_tokens": 8}
    with pytest.raises(ValueError, match=r"settings lack problems, max_new_tokens"):
        write_pass_at_k_report({"a": {1: 0.5}}, tmp_path, title="t", settings={"n": 4, "temperature": 1.0})
    with pytest.raises(ValueError, match=r"curve 'a' is empty"):
        write_pass_at_k_report({"a": {}}, tmp_path, title="t", settings=settings)
    with pytest.raises(ValueError, match=r"curves is empty"):
        write_pass_at_k_report({}, tmp_path, title="t", settings=settings)
