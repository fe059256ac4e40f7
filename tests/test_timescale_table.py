"""The leap-second table read as text agrees with ERFA's, as astropy loads it, day by day."""

from __future__ import annotations

import calendar
import subprocess
import sys
import time

import pytest

from protocols import timescale


def _first_days() -> list[float]:
    """UTC midnight of every month's first day and the day before it, 1972 to two years past now."""
    out = []
    for year in range(1972, time.gmtime().tm_year + 3):
        for month in range(1, 13):
            t = float(calendar.timegm((year, month, 1, 0, 0, 0)))
            out += [t - 1.0, t, t + 43200.0]
    return out


def test_the_table_is_astropys_file_and_agrees_with_erfa_after_astropy_loads_it() -> None:
    import erfa
    from astropy.time import Time

    assert timescale.leap_second_file() is not None
    Time("2020-01-01T00:00:00", scale="utc").tai  # astropy puts its leap-second table into ERFA
    for t in _first_days():
        y, m, d = time.gmtime(t)[:3]
        expected = float(erfa.dat(y, m, d, 0.0))
        timescale._memo.clear()
        assert timescale.tai_minus_utc(t) == expected, (y, m, d)


def test_before_1972_erfas_drift_formula_is_used() -> None:
    import erfa

    t = float(calendar.timegm((1968, 3, 1, 0, 0, 0)))
    timescale._memo.clear()
    assert timescale.tai_minus_utc(t) == float(erfa.dat(1968, 3, 1, 0.0))
    assert timescale.tai_minus_utc(t) % 1.0 != 0.0


@pytest.mark.parametrize("text", ["", "# only comments\n#\n", "41317.0 1 1 1972 10\n41000.0 1 1 1971 9\n"])
def test_a_table_without_rows_in_order_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        timescale.parse_leap_seconds(text)


def test_stamping_a_message_imports_neither_erfa_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from protocols.timescale import tai_now, utc_from_tai\n"
        "t = tai_now(); utc_from_tai(t)\n"
        "bad = [m for m in ('erfa', 'numpy', 'astropy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
