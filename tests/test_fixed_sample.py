"""The fixed random sample of training sequences and its held-out windows."""

import pytest
import torch

from leantrain.data.corpus import kjv_chapters, load_documents
from leantrain.data.fixed_sample import fixed_sample, windows


def encode(texts):  # one token per word: document d's words are "d-0", "d-1", ... -> ids 1000 d + i
    return [[int(word.split("-")[0]) * 1000 + int(word.split("-")[1]) for word in text.split()] for text in texts]


def corpus(lengths):
    return [" ".join(f"{d}-{i}" for i in range(n)) for d, n in enumerate(lengths)]


def test_windows_are_whole_and_do_not_overlap():
    found = windows([[1, 2, 3, 4, 5, 6, 7], [8, 9]], 3)
    assert found == [(0, [1, 2, 3]), (0, [4, 5, 6])]


def test_sample_is_seeded_disjoint_and_holds_out_unseen_documents_first():
    documents = corpus([40] * 30)
    sample = fixed_sample(documents, encode, seq_len=8, sequences=20, held_out=6, seed=3)
    assert sample.train.shape == (20, 8) and sample.held_out.shape == (6, 8)
    trained = {tuple(row) for row in sample.train.tolist()}
    assert len(trained) == 20 and not trained & {tuple(row) for row in sample.held_out.tolist()}
    train_documents = {row[0] // 1000 for row in sample.train.tolist()}
    held_documents = {row[0] // 1000 for row in sample.held_out.tolist()}
    assert sample.held_out_unseen_documents == 6 and not held_documents & train_documents
    again = fixed_sample(documents, encode, seq_len=8, sequences=20, held_out=6, seed=3)
    assert torch.equal(again.train, sample.train) and torch.equal(again.held_out, sample.held_out)
    other = fixed_sample(documents, encode, seq_len=8, sequences=20, held_out=6, seed=4)
    assert not torch.equal(other.train, sample.train)


def test_one_document_still_gives_disjoint_windows():
    sample = fixed_sample(corpus([100]), encode, seq_len=10, sequences=6, held_out=3, seed=0)
    assert sample.held_out_unseen_documents == 0
    assert not {tuple(r) for r in sample.train.tolist()} & {tuple(r) for r in sample.held_out.tolist()}


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="no text"):
        fixed_sample(["", "  \n"], encode, 8, 2, 1, 0)
    with pytest.raises(ValueError, match="has 2 windows of 8 tokens"):
        fixed_sample(corpus([16]), encode, 8, 2, 1, 0)
    with pytest.raises(ValueError, match="sequences=0"):
        fixed_sample(corpus([16]), encode, 8, 0, 1, 0)


def test_documents_of_the_built_in_corpora_and_of_files(tmp_path):
    chapters = kjv_chapters()
    assert len(chapters) == 1189 and chapters[0].startswith("In the beginning God created")
    (tmp_path / "a.txt").write_text("first file")
    (tmp_path / "b.txt").write_text("second file")
    assert load_documents([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]) == ["first file", "second file"]
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        load_documents(str(tmp_path / "missing.txt"))
