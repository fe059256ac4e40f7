"""Percentiles and summaries of latency samples (milliseconds)."""

from __future__ import annotations

import math
from typing import Iterable


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Iterable[float], digits: int = 3) -> dict[str, float | int | None]:
    """n, min, mean, p50, p90, p99, max of a sample; None values when it is empty."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return {"n": 0, "min": None, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    r = lambda v: round(v, digits)  # noqa: E731
    return {
        "n": len(xs),
        "min": r(min(xs)),
        "mean": r(sum(xs) / len(xs)),
        "p50": r(percentile(xs, 50)),
        "p90": r(percentile(xs, 90)),
        "p99": r(percentile(xs, 99)),
        "max": r(max(xs)),
    }


def ms_summary(values: Iterable[float]) -> dict[str, float | int | None]:
    """:func:`summary` with keys suffixed ``_ms`` (values already in milliseconds)."""
    return {(k if k == "n" else f"{k}_ms"): v for k, v in summary(values).items()}


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, digits)
