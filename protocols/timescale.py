"""TAI-UTC from ERFA's leap-second table: the one definition of the offset between SAL time and UTC.

SAL timestamps are TAI unix seconds (UTC unix time plus TAI-UTC). TAI-UTC is not a constant: it
changes at each leap second, so every conversion asks the table for the instant at hand instead of
assuming 37 s. The table is ERFA's (``erfa.dat``), the one :mod:`header.astro` uses through astropy
(astropy refreshes ERFA's table from its bundled leap-second file when it first converts to UTC).
One lookup per UTC day is memoised; ``erfa`` is imported on first use, so processes that never
convert do not pay for it.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

__all__ = ["tai_minus_utc", "tai_now", "utc_from_tai"]

_DAY = 86400.0
_memo: dict[int, float] = {}  # UTC day number (unix days) -> TAI-UTC, seconds


def tai_minus_utc(utc_unix: float | None = None) -> float:
    """TAI-UTC in seconds at UTC unix time ``utc_unix`` (default: now), from the leap-second table.

    Whole seconds since 1972; a date past the table's horizon ("dubious year") gets the table's
    last value, as ERFA returns it. A date before 1960 (outside the table) gets the 1960 value.
    """
    t = time.time() if utc_unix is None else float(utc_unix)
    day = int(t // _DAY)
    cached = _memo.get(day)
    if cached is not None:
        return cached
    import erfa

    g = time.gmtime(max(day, -3653) * _DAY)  # 1960-01-01 is unix day -3653
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        value: Any = erfa.dat(g.tm_year, g.tm_mon, g.tm_mday, 0.0)
    if len(_memo) > 64:
        _memo.clear()
    _memo[day] = float(value)
    return _memo[day]


def utc_from_tai(tai_unix: float) -> float:
    """UTC unix time of TAI unix seconds ``tai_unix`` (the offset of the UTC day it falls in)."""
    return tai_unix - tai_minus_utc(tai_unix - tai_minus_utc(tai_unix))


def tai_now() -> float:
    """Current time as SAL TAI unix seconds (system UTC clock plus TAI-UTC)."""
    t = time.time()
    return t + tai_minus_utc(t)
