"""The Earth orientation table header._astro_erfa keeps (only the columns astropy's interpolation
reads, read in an order that peaks lower) gives astropy's values bit for bit: compared here with
the full table astropy reads itself, at measured, predicted and beyond-the-table instants."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.time import Time
from astropy.utils import iers

from header import _astro_erfa as erfa_astro


def instants(table: iers.IERS) -> tuple[np.ndarray, np.ndarray]:
    """Two-part UTC JDs across the table (measured and predicted rows) and a year past its end."""
    mjd = table["MJD"].value
    t = Time(np.concatenate([np.linspace(mjd[0] - 2.0, mjd[-1] + 365.0, 4001), [60640.3, 61000.75]]), format="mjd", scale="utc")
    return t.jd1, t.jd2


def test_kept_columns_interpolate_exactly_as_the_full_table() -> None:
    full = iers.IERS_Auto.read()  # what IERS_Auto.open() reads, every column
    kept = erfa_astro._eop_table()
    assert type(kept) is type(full) and kept.colnames == erfa_astro._EOP_COLUMNS
    assert kept.meta["predictive_mjd"] == full.meta["predictive_mjd"]
    jd1, jd2 = instants(full)
    for method in ("ut1_utc", "pm_xy", "dcip_xy"):
        want = getattr(full, method)(jd1, jd2, return_status=True)
        got = getattr(kept, method)(jd1, jd2, return_status=True)
        for w, g in zip(want, got):
            assert np.asarray(getattr(w, "value", w)).tobytes() == np.asarray(getattr(g, "value", g)).tobytes()
            assert getattr(w, "unit", None) == getattr(g, "unit", None)


@pytest.mark.parametrize("read_by_astropy_first", [False, True])
def test_the_process_table_keeps_only_those_columns(monkeypatch: pytest.MonkeyPatch, read_by_astropy_first: bool) -> None:
    """Whether this module reads the default table or astropy read it before (another caller),
    astropy's cached table becomes the one with the kept columns and the IERS-B copy is released."""
    monkeypatch.setattr(iers.IERS_B, "iers_table", None)
    monkeypatch.setattr(iers.IERS_Auto, "iers_table", iers.IERS_Auto.read() if read_by_astropy_first else None)
    table = erfa_astro._eop_table()
    assert table is iers.IERS_Auto.iers_table is iers.earth_orientation_table.get()
    assert table.colnames == erfa_astro._EOP_COLUMNS and len(table) > 10000
    assert iers.IERS_B.iers_table is None


def test_a_table_set_by_the_caller_is_used() -> None:
    iers_b = iers.IERS_B.open()
    try:
        with iers.earth_orientation_table.set(iers_b):
            assert erfa_astro._eop_table() is iers_b
    finally:
        iers.IERS_B.close()
