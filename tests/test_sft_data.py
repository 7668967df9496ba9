"""SFT examples: the answer mask on hand-made examples of each TRL format, packing, the batch's loss
normaliser, worked answers, and the errors for bad input."""

import pytest
import torch
from tiny_lm import ROLE_TEMPLATE, tiny_lm

from leantrain.data.sft import (
    IGNORE_INDEX,
    collate,
    encode_example,
    encode_examples,
    example_format,
    load_sft_data,
    pack,
    partial_sums,
    worked_answer,
)
from leantrain.recipes.sft import answer_loss
from leantrain.verify.answers import last_number


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_lm(tmp_path_factory.mktemp("tiny-sft"), ROLE_TEMPLATE)


@pytest.fixture(scope="module")
def tokenizer(lm):
    return lm[1]


def trained_text(tokenizer, row) -> str:
    example = encode_example(row, tokenizer)
    return tokenizer.decode([i for i, kept in zip(example.ids, example.trained, strict=True) if kept])


def test_messages_train_every_assistant_turn_and_nothing_else(tokenizer):
    row = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the news"},
                        {"role": "assistant", "content": "sport"}, {"role": "user", "content": "and then"},
                        {"role": "assistant", "content": "business"}]}
    text = trained_text(tokenizer, row)
    assert text.replace(" ", "") == "sport\nbusiness\n"  # each answer and its end of turn (the template's newline)


def test_prompt_completion_strings_train_the_completion_and_eos(tokenizer):
    row = {"prompt": "the news was ", "completion": "about sport"}
    assert trained_text(tokenizer, row).replace(" ", "") == "aboutsport" + tokenizer.eos_token
    example = encode_example(row, tokenizer)
    whole = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
    assert example.ids == whole


def test_chat_prompt_completion_trains_only_the_completion(tokenizer):
    row = {"prompt": [{"role": "user", "content": "the news"}, {"role": "assistant", "content": "sport"},
                      {"role": "user", "content": "again"}],
           "completion": [{"role": "assistant", "content": "business"}]}
    assert trained_text(tokenizer, row).replace(" ", "") == "business\n"


def test_bad_rows_get_clear_errors(tokenizer):
    with pytest.raises(ValueError, match=r"unknown format with keys \['question'\]"):
        example_format({"question": "?"}, "example 3")
    with pytest.raises(ValueError, match="both strings or both lists"):
        example_format({"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}, "x")
    with pytest.raises(ValueError, match="role 'robot'; allowed: system, user, assistant, tool"):
        encode_example({"messages": [{"role": "robot", "content": "hi"}]}, tokenizer)
    with pytest.raises(ValueError, match="example 1: no answer tokens"):
        encode_example({"messages": [{"role": "user", "content": "hi"}]}, tokenizer, "example 1")
    with pytest.raises(ValueError, match=r"example 2 has \d+ tokens, more than max_length=4"):
        encode_examples([{"prompt": "a", "completion": "b"}, {"prompt": "the news " * 5, "completion": "sport"}],
                        tokenizer, 4, "data")


def test_a_template_whose_prefixes_differ_is_refused(tmp_path):
    _, tokenizer = tiny_lm(tmp_path, "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
                                     "{% if add_generation_prompt %}Answer:{% endif %}")
    with pytest.raises(ValueError, match="renders a conversation's prefix differently"):
        encode_example({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                       tokenizer)


def test_worked_answers_end_with_the_answer():
    assert partial_sums("4 - 1 - 7") == "4 - 1 = 3\n3 - 7 = -4\nThe answer is -4."
    assert last_number(partial_sums("12 + 30 - 5")) == "37"
    assert worked_answer("288", {"answer_cot": "35 x 3 = 105 ...\n#### 288"}).endswith("#### 288")
    assert worked_answer("5", {"expression": "2 * 3 - 1"}) == "The answer is 5."
    data = load_sft_data("arithmetic", 10, size=40)
    prompts = {json_row["prompt"][0]["content"] for json_row in data.held_out}
    assert not prompts & {row["prompt"][0]["content"] for row in data.train}
    assert len(data.held_out) == 10 and len(data.held_out_problems) == 10
    for row, answer in zip(data.held_out, data.held_out_problems.columns["answer"], strict=True):
        assert last_number(row["completion"][0]["content"]) == answer


def test_packing_places_every_example_once_within_the_row_length():
    from leantrain.data.sft import Example

    examples = [Example(list(range(n)), [True] * n) for n in (7, 3, 9, 2, 5, 5, 1)]
    rows = pack(examples, 10)
    assert sorted(len(e) for row in rows for e in row) == sorted(len(e) for e in examples)
    assert all(sum(len(e) for e in row) <= 10 for row in rows)
    assert len(rows) == 4  # 32 tokens in rows of 10: first-fit decreasing needs the minimum


def test_packed_rows_give_the_same_answer_loss_as_separate_rows(lm):
    model, tokenizer = lm
    rows = [{"prompt": f"the news {a} ", "completion": "was about sport" * (1 + a % 2)} for a in range(5)]
    examples = encode_examples(rows, tokenizer, 64, "data")
    separate = collate([[e] for e in examples], tokenizer.eos_token_id)
    packed = collate(pack(examples, 64), tokenizer.eos_token_id)
    assert "position_ids" in packed and "attention_mask" in separate
    assert len(packed["input_ids"]) < len(examples)
    total = (separate["labels"][:, 1:] != IGNORE_INDEX).sum()
    assert separate["answer_tokens"].sum() == total == packed["answer_tokens"].sum()
    model.eval()

    torch.testing.assert_close(answer_loss(model, packed), answer_loss(model, separate), rtol=1e-5, atol=1e-6)
