"""TAI-UTC comes from the leap-second table, and the site has one definition."""

from __future__ import annotations

import calendar

import pytest

from header import _astro_erfa
from header.site import SITE_GEODETIC
from protocols.timescale import tai_minus_utc, utc_from_tai
from tools.sim import night, scenario


def _utc(*ymdhms: int) -> float:
    return float(calendar.timegm(ymdhms))


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        (_utc(2012, 6, 30, 23, 59, 59), 34.0),
        (_utc(2012, 7, 1, 0, 0, 0), 35.0),
        (_utc(2016, 12, 31, 23, 59, 59), 36.0),
        (_utc(2017, 1, 1, 0, 0, 0), 37.0),
        (_utc(2026, 12, 3, 9, 0, 0), 37.0),
    ],
)
def test_tai_minus_utc_follows_the_leap_seconds(utc: float, expected: float) -> None:
    assert tai_minus_utc(utc) == expected


def test_utc_from_tai_on_both_sides_of_a_leap_second() -> None:
    before, after = _utc(2016, 12, 31, 12, 0, 0), _utc(2017, 1, 1, 12, 0, 0)
    assert utc_from_tai(before + 36.0) == before
    assert utc_from_tai(after + 37.0) == after


def test_the_simulator_and_the_headers_share_one_site() -> None:
    assert (night.SITE_LON_DEG, night.SITE_LAT_DEG, night.SITE_HEIGHT_M) == SITE_GEODETIC
    assert _astro_erfa.SITE.lon.deg == pytest.approx(SITE_GEODETIC[0], abs=1e-9)
    tai = _utc(2026, 11, 25, 3, 0, 0) + 37.0
    d = _utc(2026, 11, 25, 3, 0, 0) / 86400.0 + 2440587.5 - 2451545.0
    assert scenario._local_sidereal_deg(tai) == pytest.approx((280.46061837 + 360.98564736629 * d + SITE_GEODETIC[0]) % 360.0)
