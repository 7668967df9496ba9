"""Rows of a JSONL or CSV file: what RL problems (data/problems.py) and SFT examples (data/sft.py) are read from."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def read_rows(path: str | Path, what: str) -> list[dict[str, Any]]:
    """Every row of a ``.jsonl`` (one JSON value a line, blank lines skipped) or ``.csv`` file (a dict per row).
    ``what`` names the file in the errors: a missing file, another suffix, a line that is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number} is not JSON: {error}") from error
        return rows
    if path.suffix == ".csv":
        with open(path, newline="") as file:
            return list(csv.DictReader(file))
    raise ValueError(f"{what} {str(path)!r} must end in .jsonl or .csv")
