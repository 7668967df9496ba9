"""SamplingConfig: which estimator a sampled linear layer uses, at what budget, fed by what importance.

Torch-free, so that the command line reads it without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from leantrain.names import METHODS, SOURCES


@dataclass(frozen=True)
class SamplingConfig:
    """How converted linear layers estimate their weight gradient.

    Args:
        method: "exact" (keep every row), "crs", "topk" (biased) or "wtacrs".
        budget: ρ in (0, 1]; a step keeps k = clamp(⌊ρ·N⌋, minimal_k, N) of its N input rows.
        importance: "norm", "running" or "cached" — see ``leantrain.sampling.importance``.
        minimal_k: the fewest rows kept, however small ρ·N is (10 in the WTA-CRS code).
        seed: seeds one generator per converted layer; None draws from torch's global generator.
    """

    method: str = "wtacrs"
    budget: float = 0.3
    importance: str = "running"
    minimal_k: int = 10
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"SamplingConfig.method={self.method!r} is not one of {METHODS}")
        if (
            isinstance(self.budget, bool)
            or not isinstance(self.budget, int | float)
            or math.isnan(self.budget)
            or not 0.0 < self.budget <= 1.0
        ):
            raise ValueError(f"SamplingConfig.budget={self.budget!r} must be a number in (0, 1]")
        if self.importance not in SOURCES:
            raise ValueError(f"SamplingConfig.importance={self.importance!r} is not one of {SOURCES}")
        if isinstance(self.minimal_k, bool) or not isinstance(self.minimal_k, int) or self.minimal_k < 1:
            raise ValueError(f"SamplingConfig.minimal_k={self.minimal_k!r} must be an integer >= 1")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"SamplingConfig.seed={self.seed!r} must be an integer or None")

    @classmethod
    def from_spec(cls, spec: str, **options: object) -> SamplingConfig:
        """``"METHOD@BUDGET"`` or ``"METHOD@BUDGET:IMPORTANCE"`` (e.g. ``"wtacrs@0.3"``, ``"crs@0.1:norm"``), the
        one spelling of a sampling choice on the command line; ``options`` are the other fields."""
        method, at, rest = spec.strip().partition("@")
        budget, colon, importance = rest.partition(":")
        try:
            value = float(budget)
        except ValueError:
            value = None
        if not at or value is None or (colon and not importance):
            raise ValueError(f"sampling {spec!r} is not METHOD@BUDGET[:IMPORTANCE], e.g. wtacrs@0.3 or crs@0.1:norm "
                             f"(METHOD one of {METHODS}, IMPORTANCE one of {SOURCES})")
        if colon:
            options = {**options, "importance": importance}
        return cls(method, value, **options)

    @property
    def spec(self) -> str:
        """The ``from_spec`` spelling of method, budget and importance."""
        return f"{self.method}@{self.budget:g}" + ("" if self.importance == "running" else f":{self.importance}")
