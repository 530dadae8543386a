"""The one percentile every page and check uses (dashboard, canaries, alerts), so two pages
never show two different p95s of the same numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `fraction` of the values at
    or below it; always a value that really occurred, never an interpolation. None for no
    values. p50 of [1, 2, 9] is 2, p95 of it is 9; p50 of [1, 2] is 1."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[rank - 1]
