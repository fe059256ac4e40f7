"""TAI-UTC from the leap-second table: the one definition of the offset between SAL time and UTC.

SAL timestamps are TAI unix seconds (UTC unix time plus TAI-UTC). TAI-UTC is not a constant: it
changes at each leap second, so every conversion asks the table for the instant at hand instead of
assuming 37 s. The table is the IERS leap-second file astropy ships (``astropy_iers_data``'s
``Leap_Second.dat``), the one astropy loads into ERFA when it first converts to UTC, so
:mod:`header.astro` and this module read the same table (``tests/test_timescale.py`` holds them
equal to ``erfa.dat`` day by day).

The file is read here as text, without importing ERFA: ``erfa`` brings numpy with it (some 20 MB
resident), and every process stamps its messages with :func:`tai_now`, while only the composer
needs astronomy. Dates before 1972 (TAI-UTC then drifted by a formula, not whole seconds) and a
missing file fall back to ``erfa.dat``, imported on that first use. One lookup per UTC day is
memoised.
"""

from __future__ import annotations

import bisect
import importlib.util
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["tai_minus_utc", "tai_now", "utc_from_tai"]

_DAY = 86400.0
_MJD_UNIX_EPOCH = 40587  # MJD of 1970-01-01
_FIRST_LEAP_DAY = 730  # 1972-01-01 in unix days: whole-second TAI-UTC from here on
_memo: dict[int, float] = {}  # UTC day number (unix days) -> TAI-UTC, seconds
_table: tuple[list[int], list[float]] | None = None  # unix day each value starts, TAI-UTC (s)


def leap_second_file() -> Path | None:
    """astropy's bundled IERS leap-second file, found without importing any package."""
    try:
        spec = importlib.util.find_spec("astropy_iers_data")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(folder) / "data" / "Leap_Second.dat"
        if p.is_file():
            return p
    return None


def parse_leap_seconds(text: str) -> tuple[list[int], list[float]]:
    """(unix day, TAI-UTC) rows of an IERS ``Leap_Second.dat`` (``MJD day month year TAI-UTC``
    per line, ``#`` comments), in date order; ValueError when it holds none."""
    days: list[int] = []
    values: list[float] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or len(parts) < 5:
            continue
        days.append(int(float(parts[0])) - _MJD_UNIX_EPOCH)
        values.append(float(parts[4]))
    if not days or days != sorted(days):
        raise ValueError("no leap-second rows in date order")
    return days, values


def _leap_table() -> tuple[list[int], list[float]] | None:
    global _table
    if _table is None:
        p = leap_second_file()
        try:
            _table = parse_leap_seconds(p.read_text()) if p is not None else ([], [])
        except (OSError, ValueError, UnicodeDecodeError):
            _table = ([], [])
    return _table if _table[0] else None


def _erfa_dat(day: int) -> float:
    import erfa

    g = time.gmtime(max(day, -3653) * _DAY)  # 1960-01-01 is unix day -3653
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        value: Any = erfa.dat(g.tm_year, g.tm_mon, g.tm_mday, 0.0)
    return float(value)


def tai_minus_utc(utc_unix: float | None = None) -> float:
    """TAI-UTC in seconds at UTC unix time ``utc_unix`` (default: now), from the leap-second table.

    Whole seconds since 1972; a date past the table's horizon gets the table's last value, as ERFA
    returns it. A date before 1960 (outside ERFA's table) gets the 1960 value.
    """
    t = time.time() if utc_unix is None else float(utc_unix)
    day = int(t // _DAY)
    cached = _memo.get(day)
    if cached is not None:
        return cached
    table = _leap_table() if day >= _FIRST_LEAP_DAY else None
    if table is not None and day >= table[0][0]:
        value = table[1][bisect.bisect_right(table[0], day) - 1]
    else:
        value = _erfa_dat(day)
    if len(_memo) > 64:
        _memo.clear()
    _memo[day] = value
    return value


def utc_from_tai(tai_unix: float) -> float:
    """UTC unix time of TAI unix seconds ``tai_unix`` (the offset of the UTC day it falls in)."""
    return tai_unix - tai_minus_utc(tai_unix - tai_minus_utc(tai_unix))


def tai_now() -> float:
    """Current time as SAL TAI unix seconds (system UTC clock plus TAI-UTC)."""
    t = time.time()
    return t + tai_minus_utc(t)
