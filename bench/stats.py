"""Summary statistics the results use: median, p95 (nearest rank), min, max."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass
class Summary:
    n: int
    median: float
    p95: float
    min: float
    max: float


def summarize(values: list[float]) -> Summary | None:
    """Summarize values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return Summary(len(ordered), statistics.median(ordered), ordered[rank - 1], ordered[0], ordered[-1])


def median_or_none(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None
