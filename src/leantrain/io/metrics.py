"""JSONL metrics: one JSON object per line, flushed as written, so a crashed run keeps its log."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a JSONL metrics file, in order."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


class MetricsWriter:
    """Appends records to ``path``. A fresh run (``resume_step=None``) starts an empty file; a run
    resumed after ``resume_step`` updates keeps only the records with ``step <= resume_step`` (or no
    step), so lines written after the checkpoint by the interrupted run are not duplicated.

    >>> with MetricsWriter("run/metrics.jsonl") as metrics:
    ...     metrics.write({"step": 1, "loss": 3.2, "lr": 1e-3})
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", resume_step) <= resume_step]
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(temporary, self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, record: Mapping) -> None:
        self._file.write(json.dumps(dict(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
