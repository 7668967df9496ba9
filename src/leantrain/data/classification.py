"""Labelled text for sequence classification: the built-in BBC News and KJV book groups
("kjv-books"), local CSV/JSONL files, or an HF ``datasets`` name (needs the ``datasets`` package and
a network, or its local cache)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from leantrain.data.bbc import LABELS, LabelledText, load_bbc_news, split
from leantrain.data.kjv_books import GROUPS, load_kjv_books
from leantrain.extras import require


@dataclass(frozen=True)
class ClassificationData:
    train: list[LabelledText]
    test: list[LabelledText]
    label_names: tuple[str, ...]


def _rows_from_file(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    raise ValueError(f"data file {str(path)!r}: unknown format {path.suffix!r}; use .csv or .jsonl")


def _rows_from_hub(name: str) -> tuple[list[dict], list[dict] | None]:
    datasets = require("datasets", f"data 'hf:{name}'")
    loaded = datasets.load_dataset(name)
    test = next((loaded[s] for s in ("test", "validation") if s in loaded), None)
    return list(loaded["train"]), None if test is None else list(test)


def _labelled(rows: list[dict], source: str, text_column: str, label_column: str,
              label_names: list[str]) -> list[LabelledText]:
    if not rows:
        raise ValueError(f"data {source!r} holds no examples")
    for column in (text_column, label_column):
        if column not in rows[0]:
            raise ValueError(f"data {source!r} has no column {column!r}; its columns are {sorted(rows[0])}")
    out = []
    for row in rows:
        label = str(row[label_column])
        if label not in label_names:
            label_names.append(label)
        out.append(LabelledText(str(row[text_column]), label_names.index(label)))
    return out


def load_classification_data(
    source: str = "bbc",
    test_source: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ClassificationData:
    """``source``: "bbc", "kjv-books", a .csv/.jsonl path, or "hf:NAME". Without a separate test
    set, a seeded ``test_fraction`` of the examples is held out. Labels map to ids in order of first appearance
    (numerically sorted when every label is an integer)."""
    if source == "bbc":
        train, test = split(load_bbc_news(), test_fraction, seed)
        return ClassificationData(train, test, LABELS)
    if source == "kjv-books":
        train, test = split(load_kjv_books(), test_fraction, seed)
        return ClassificationData(train, test, GROUPS)
    if source.startswith("hf:"):
        train_rows, test_rows = _rows_from_hub(source[3:])
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"data file {source!r} does not exist")
        train_rows = _rows_from_file(path)
        test_rows = None
        if test_source is not None:
            if not Path(test_source).is_file():
                raise FileNotFoundError(f"test data file {test_source!r} does not exist")
            test_rows = _rows_from_file(Path(test_source))
    all_labels = {str(r.get(label_column)) for r in train_rows + (test_rows or [])}
    names = sorted(all_labels, key=int) if all(v.lstrip("-").isdigit() for v in all_labels) else []
    train = _labelled(train_rows, source, text_column, label_column, names)
    if test_rows is None:
        train, test = split(train, test_fraction, seed)
    else:
        test = _labelled(test_rows, test_source or source, text_column, label_column, names)
    if not train or not test:
        raise ValueError(f"data {source!r}: {len(train)} training and {len(test)} test examples; need at least 1 each")
    return ClassificationData(train, test, tuple(names))
