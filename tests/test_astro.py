"""Tests for header.astro against independent astropy / stdlib computations."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from header import _astro_erfa as astro  # the private implementation, compared with astropy

import astropy.units as u  # noqa: E402  (after header.astro: IERS settings applied)
from astropy.coordinates import AltAz, EarthLocation, SkyCoord, TETE  # noqa: E402
from astropy.time import Time  # noqa: E402

TAI_MINUS_UTC = 37.0  # s, since 2017-01-01 (header-facts.md)

# Site, built here from header-facts.md rather than taken from the module.
FACT_SITE = EarthLocation.from_geodetic(
    lon=-70.749417 * u.deg, lat=-30.244639 * u.deg, height=2663.0 * u.m
)

# Instants for comparisons with astropy coordinates: inside the bundled IERS
# table (astropy itself warns about polar motion beyond its end, 2027-10).
T_MIN = calendar.timegm((2024, 1, 1, 0, 0, 0)) + TAI_MINUS_UTC
T_MAX = calendar.timegm((2027, 10, 1, 0, 0, 0)) + TAI_MINUS_UTC


def tai_unix_of_tai_calendar(*ymdhms: int) -> float:
    """TAI unix seconds of a TAI calendar instant.

    TAI days are exactly 86400 SI seconds, so the proleptic calendar
    arithmetic of calendar.timegm is exact for TAI.
    """
    return float(calendar.timegm(ymdhms))


def tai_unix_of_utc_calendar(*ymdhms: int) -> float:
    """TAI unix seconds of a UTC instant in 2017 or later (TAI-UTC = 37 s)."""
    return float(calendar.timegm(ymdhms)) + TAI_MINUS_UTC


def astropy_altaz(ra: float, dec: float, tai_unix: float) -> AltAz:
    """Independent route: SkyCoord -> AltAz, pressure 0 (no refraction)."""
    obstime = Time(tai_unix - TAI_MINUS_UTC, format="unix", scale="utc")
    frame = AltAz(obstime=obstime, location=FACT_SITE, pressure=0 * u.hPa)
    return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").transform_to(frame)


def astropy_ha_hours(ra: float, dec: float, tai_unix: float) -> float:
    """Independent route: LAST (Time.sidereal_time) minus TETE (apparent) RA."""
    t = Time(tai_unix - TAI_MINUS_UTC, format="unix", scale="utc")
    last = t.sidereal_time("apparent", longitude=FACT_SITE.lon)
    ra_app = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").transform_to(TETE(obstime=t)).ra
    return ((last - ra_app).to_value(u.hourangle) + 12.0) % 24.0 - 12.0


# --------------------------------------------------------------------------
# Configuration and time scales
# --------------------------------------------------------------------------
def test_iers_never_downloads():
    from astropy.utils import iers

    assert iers.conf.auto_download is False


def test_site_matches_facts():
    assert astro.SITE.lon.to_value(u.deg) == pytest.approx(-70.749417, abs=1e-9)
    assert astro.SITE.lat.to_value(u.deg) == pytest.approx(-30.244639, abs=1e-9)
    assert astro.SITE.height.to_value(u.m) == pytest.approx(2663.0, abs=1e-6)
    # Geocentric coordinates from header-facts.md (to the metre).
    x, y, z = (q.to_value(u.m) for q in astro.SITE.geocentric)
    assert (x, y, z) == pytest.approx((1818938.94, -5208470.95, -3195172.08), abs=1.0)


def test_sal_time_epoch_example():
    tai_unix = tai_unix_of_utc_calendar(2026, 11, 25, 3, 4, 6)
    assert astro.tai_iso(tai_unix) == "2026-11-25T03:04:43.000"
    assert astro.utc_iso(tai_unix) == "2026-11-25T03:04:06.000"
    t = astro.sal_time(tai_unix)
    assert t.scale == "tai"
    # Same instant as the UTC unix time (stdlib) seen by astropy's unix format.
    utc_unix = calendar.timegm((2026, 11, 25, 3, 4, 6))
    assert abs((t - Time(utc_unix, format="unix", scale="utc")).to_value(u.s)) < 1e-6


def test_date_and_date_obs_are_37s_apart():
    for tai_unix in (T_MIN + 12345.678, tai_unix_of_utc_calendar(2025, 7, 1, 23, 59, 30), T_MAX):
        date_obs = dt.datetime.fromisoformat(astro.tai_iso(tai_unix))  # TAI
        date = dt.datetime.fromisoformat(astro.utc_iso(tai_unix))  # UTC
        assert (date_obs - date).total_seconds() == pytest.approx(TAI_MINUS_UTC, abs=1e-6)


def test_iso_format_and_rounding():
    base = tai_unix_of_tai_calendar(2026, 3, 1, 23, 59, 59)
    assert astro.tai_iso(base + 0.1234) == "2026-03-01T23:59:59.123"
    # Rounds to the millisecond, carrying into the next day correctly.
    assert astro.tai_iso(base + 0.9996) == "2026-03-02T00:00:00.000"


def test_mjd_consistency():
    tai_unix = tai_unix_of_tai_calendar(2026, 11, 25, 3, 4, 43) + 0.25
    # MJD 40587 is 1970-01-01; in TAI every day is 86400 s.
    assert astro.mjd_tai(tai_unix) == pytest.approx(40587.0 + tai_unix / 86400.0, abs=1e-9)
    assert (astro.mjd_tai(tai_unix) - astro.mjd_utc(tai_unix)) * 86400.0 == pytest.approx(
        TAI_MINUS_UTC, abs=1e-5
    )
    # MJD and ISO agree with each other.
    iso = astro.tai_iso(tai_unix)
    assert Time(iso, scale="tai").mjd == pytest.approx(astro.mjd_tai(tai_unix), abs=1e-8)
    utc = Time(astro.utc_iso(tai_unix), scale="utc")
    assert utc.mjd == pytest.approx(astro.mjd_utc(tai_unix), abs=1e-8)


def test_exposure_times():
    start = tai_unix_of_tai_calendar(2026, 11, 25, 3, 4, 43)
    out = astro.exposure_times(start, start + 30.0)
    assert out["DATE-BEG"] == "2026-11-25T03:04:43.000"
    assert out["DATE-END"] == "2026-11-25T03:05:13.000"
    assert out["DATE-AVG"] == "2026-11-25T03:04:58.000"
    assert (out["MJD-END"] - out["MJD-BEG"]) * 86400 == pytest.approx(30.0, abs=1e-5)
    assert out["TELAPSE"] == pytest.approx(30.0)


# --------------------------------------------------------------------------
# DAYOBS
# --------------------------------------------------------------------------
def test_dayobs_noon_boundary():
    before = tai_unix_of_tai_calendar(2026, 11, 25, 11, 59, 59)
    after = tai_unix_of_tai_calendar(2026, 11, 25, 12, 0, 1)
    assert astro.dayobs(before) == "20261124"
    assert astro.dayobs(after) == "20261125"
    assert astro.dayobs(before) != astro.dayobs(after)
    assert astro.dayobs_int(after) == 20261125


def test_dayobs_exact_edges_and_midnight():
    noon = tai_unix_of_tai_calendar(2026, 1, 1, 12, 0, 0)
    assert astro.dayobs(noon - 1e-3) == "20251231"
    assert astro.dayobs(noon) == "20260101"
    # Civil midnight does not change the observing day.
    assert astro.dayobs(tai_unix_of_tai_calendar(2026, 1, 1, 23, 59, 59)) == "20260101"
    assert astro.dayobs(tai_unix_of_tai_calendar(2026, 1, 2, 0, 0, 1)) == "20260101"


@given(st.floats(min_value=T_MIN, max_value=T_MAX, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_dayobs_matches_stdlib(tai_unix):
    # Independent: TAI is uniform, so stdlib datetime arithmetic is exact.
    expected = (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=tai_unix - 43200.0)).strftime("%Y%m%d")
    # Skip values within a microsecond of the roll-over (float/timedelta rounding).
    frac = (tai_unix - 43200.0) % 86400.0
    assume(1e-6 < frac < 86400.0 - 1e-6)
    assert astro.dayobs(tai_unix) == expected


# --------------------------------------------------------------------------
# Sky
# --------------------------------------------------------------------------
@given(
    tai_unix=st.floats(min_value=T_MIN, max_value=T_MAX, allow_nan=False),
    ra=st.floats(min_value=0.0, max_value=360.0, exclude_max=True),
    sin_dec=st.floats(min_value=-1.0, max_value=0.55),  # uniform on the sphere, visible part
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_airmass_and_altaz_match_astropy(tai_unix, ra, sin_dec):
    dec = math.degrees(math.asin(sin_dec))
    ref = astropy_altaz(ra, dec, tai_unix)
    secz = float(ref.secz)
    assume(0 < float(ref.alt.deg) and secz < 3.0)
    alt, az = astro.alt_az(ra, dec, tai_unix)
    am = astro.airmass(alt)
    assert am is not None
    assert am == pytest.approx(secz, rel=1e-3)
    # Positions themselves agree far better than the airmass tolerance.
    assert abs(alt - ref.alt.deg) * 3600 < 0.1
    assert abs(((az - ref.az.deg) + 180) % 360 - 180) * math.cos(math.radians(alt)) * 3600 < 0.1


@pytest.mark.parametrize("dec", [-89.0, -80.0, -30.244639, 0.0, 30.0, 80.0, 89.0])
@pytest.mark.parametrize("ra", [0.0, 0.001, 123.4, 359.999])
def test_hour_angle_matches_independent_route(ra, dec):
    for tai_unix in (T_MIN + 3600.0, tai_unix_of_utc_calendar(2026, 11, 25, 3, 4, 6), T_MAX - 7200.0):
        ha = astro.hour_angle_hours(ra, dec, tai_unix)
        ref = astropy_ha_hours(ra, dec, tai_unix)
        diff_h = (ha - ref + 12.0) % 24.0 - 12.0
        assert abs(diff_h) * 15.0 * 3600.0 < 1.0  # arcsec
        assert -12.0 <= ha < 12.0


@given(
    tai_unix=st.floats(min_value=T_MIN, max_value=T_MAX, allow_nan=False),
    ra=st.floats(min_value=0.0, max_value=360.0, exclude_max=True),
    dec=st.floats(min_value=-89.9, max_value=89.9),
)
@settings(max_examples=60, deadline=None)
def test_hour_angle_random(tai_unix, ra, dec):
    diff_h = (astro.hour_angle_hours(ra, dec, tai_unix) - astropy_ha_hours(ra, dec, tai_unix) + 12) % 24 - 12
    assert abs(diff_h) * 15.0 * 3600.0 < 1.0


def test_meridian_transit_has_zero_hour_angle_and_max_altitude():
    # Independent physical check: at the hour angle's zero crossing the
    # altitude of a southern star is maximal and its azimuth is 0 or 180.
    ra, dec = 83.63, -50.0
    t0 = tai_unix_of_utc_calendar(2026, 1, 10, 0, 0, 0)
    ts = t0 + np.arange(0, 86400.0, 60.0)
    ha = astro.hour_angle_hours_many(ra, dec, ts)
    i = int(np.argmin(np.abs(ha)))
    alt, az = astro.alt_az_many(ra, dec, ts)
    assert abs(ha[i]) < 0.02
    assert abs(int(np.argmax(alt)) - i) <= 1
    assert min(abs(az[i] - 180.0), abs(az[i]), abs(az[i] - 360.0)) < 0.5


def test_vectorised_matches_scalar():
    ras = np.array([0.0, 45.0, 190.0, 359.5])
    decs = np.array([-80.0, -30.0, 10.0, 60.0])
    t = tai_unix_of_utc_calendar(2025, 5, 5, 5, 5, 5)
    alts, azs = astro.alt_az_many(ras, decs, t)
    has = astro.hour_angle_hours_many(ras, decs, t)
    for k in range(len(ras)):
        alt, az = astro.alt_az(ras[k], decs[k], t)
        assert alts[k] == pytest.approx(alt, abs=1e-9)
        assert azs[k] == pytest.approx(az, abs=1e-9)
        assert has[k] == pytest.approx(astro.hour_angle_hours(ras[k], decs[k], t), abs=1e-12)
    # Arrays of times broadcast too.
    ts = t + np.array([0.0, 600.0, 1200.0, 1800.0])
    alts_t, _ = astro.alt_az_many(ras[0], decs[0], ts)
    assert alts_t[2] == pytest.approx(astro.alt_az(ras[0], decs[0], ts[2])[0], abs=1e-9)


def test_airmass_and_zenith_distance():
    assert astro.airmass(90.0) == pytest.approx(1.0)
    assert astro.airmass(30.0) == pytest.approx(2.0)
    assert astro.zenith_distance(30.0) == pytest.approx(60.0)
    assert astro.airmass(0.0) is None
    assert astro.airmass(-5.0) is None
    assert astro.airmass(float("nan")) is None


def test_observed_pointing_bundle():
    t = tai_unix_of_utc_calendar(2026, 11, 25, 3, 4, 6)
    p = astro.observed_pointing(30.0, -40.0, t)
    alt, az = astro.alt_az(30.0, -40.0, t)
    assert (p.alt_deg, p.az_deg) == (alt, az)
    assert p.ha_hours == astro.hour_angle_hours(30.0, -40.0, t)
    assert p.airmass == astro.airmass(alt)
    assert p.zenith_distance_deg == pytest.approx(90.0 - alt)
    assert p.eop in ("measured", "predicted", "extrapolated")


# --------------------------------------------------------------------------
# Offline robustness and cost
# --------------------------------------------------------------------------
def test_no_warnings_or_errors_2024_to_2027():
    instants = [
        tai_unix_of_utc_calendar(y, m, 15, h, 0, 0)
        for y in (2024, 2025, 2026, 2027)
        for m in (1, 4, 7, 10, 11, 12)
        for h in (0, 12)
    ] + [tai_unix_of_utc_calendar(2027, 12, 31, 23, 59, 59)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in instants:
            astro.tai_iso(t)
            astro.utc_iso(t)
            astro.mjd_tai(t)
            astro.mjd_utc(t)
            astro.dayobs(t)
            p = astro.observed_pointing(200.0, -60.0, t)
            assert math.isfinite(p.alt_deg) and math.isfinite(p.ha_hours)
    assert astro.eop_status(instants[0]) == "measured"
    assert astro.eop_status(instants[-1]) == "extrapolated"


def test_cost_per_call_under_20ms():
    t = tai_unix_of_utc_calendar(2026, 11, 25, 3, 4, 6)
    astro.preload()
    for fn in (
        lambda: astro.alt_az(10.0, -20.0, t),
        lambda: astro.hour_angle_hours(10.0, -20.0, t),
        lambda: astro.observed_pointing(10.0, -20.0, t),
        lambda: astro.tai_iso(t),
        lambda: astro.dayobs(t),
    ):
        durations = []
        for _ in range(7):
            t0 = time.perf_counter()
            fn()
            durations.append(time.perf_counter() - t0)
        assert sorted(durations)[3] < 0.020


# --------------------------------------------------------------------------
# Scalar fast path vs the direct astropy Time route
# --------------------------------------------------------------------------
# Reference: what header.astro computed before the fast path, straight from
# astropy Time objects (scale conversions, IERS table) and ERFA's apco13 /
# apci13 (at TDB), with the site taken from header-facts.md.
import erfa  # noqa: E402
from astropy.time.utils import day_frac as astropy_day_frac  # noqa: E402
from astropy.utils import iers  # noqa: E402

REF_LON_RAD = float(FACT_SITE.lon.to_value(u.rad))
REF_LAT_RAD = float(FACT_SITE.lat.to_value(u.rad))
REF_HEIGHT_M = float(FACT_SITE.height.to_value(u.m))

# Fast-path range: from 2015 until ERFA's "dubious year" for UTC (2029 with
# the leap-second table in use; on 2028-12-31 ERFA already looks at the next
# day), i.e. across the 2016-12-31 leap second and past the end of the
# bundled IERS table (2027-11).
FAST_MIN = tai_unix_of_tai_calendar(2015, 1, 1, 0, 0, 0)
FAST_MAX = tai_unix_of_tai_calendar(2028, 12, 30, 0, 0, 0)
IERS_END = tai_unix_of_tai_calendar(2027, 11, 1, 0, 0, 0)
# 2016-12-31T23:59:60.000 UTC (TAI-UTC = 36 s until the leap second ends).
LEAP_START = float(calendar.timegm((2017, 1, 1, 0, 0, 0))) + 36.0


def ref_time(tai_unix: float) -> Time:
    return Time(tai_unix, format="unix_tai", scale="tai")


def ref_dayobs(tai_unix: float) -> str:
    ymdhms = ref_time(tai_unix - 43200.0).tai.ymdhms
    return f"{int(ymdhms['year']):04d}{int(ymdhms['month']):02d}{int(ymdhms['day']):02d}"


def ref_eop_status(tai_unix: float) -> str:
    t = ref_time(tai_unix).utc
    _, status = iers.earth_orientation_table.get().ut1_utc(t.jd1, t.jd2, return_status=True)
    status = int(np.asarray(status))
    if status in (iers.FROM_IERS_B, iers.FROM_IERS_A):
        return "measured"
    if status == iers.FROM_IERS_A_PREDICTION:
        return "predicted"
    return "extrapolated"


def ref_observed(ra: float, dec: float, tai_unix: float) -> tuple[float, float, float]:
    """alt, az (deg), ha (h): Time scales + IERS table + apco13/atciq/atioq + apci13."""
    t = ref_time(tai_unix)
    utc = t.utc
    tdb = t.tdb
    table = iers.earth_orientation_table.get()
    dut1 = table.ut1_utc(utc.jd1, utc.jd2).to_value(u.s)
    xp, yp = (q.to_value(u.rad) for q in table.pm_xy(utc.jd1, utc.jd2))
    astrom, _ = erfa.apco13(
        utc.jd1, utc.jd2, dut1, REF_LON_RAD, REF_LAT_RAD, REF_HEIGHT_M, xp, yp, 0.0, 0.0, 0.0, 0.0
    )
    rc, dc = math.radians(ra), math.radians(dec)
    ri, di = erfa.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom)
    aob, zob, _, _, _ = erfa.atioq(ri, di, astrom)
    astrom_geo, _ = erfa.apci13(tdb.jd1, tdb.jd2)
    ri_geo, _ = erfa.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom_geo)
    alt = 90.0 - float(np.degrees(zob))
    az = float(np.mod(np.degrees(aob), 360.0))
    ha = float(np.mod(np.degrees(astrom["eral"] - ri_geo) / 15.0 + 12.0, 24.0) - 12.0)
    return alt, az, ha


def assert_time_values_match(tai_unix: float) -> None:
    t = ref_time(tai_unix)
    assert astro.tai_iso(tai_unix) == str(t.tai.isot)
    assert astro.utc_iso(tai_unix) == str(t.utc.isot)
    assert abs(astro.mjd_tai(tai_unix) - float(t.tai.mjd)) <= 1e-9
    assert abs(astro.mjd_utc(tai_unix) - float(t.utc.mjd)) <= 1e-9
    assert astro.dayobs(tai_unix) == ref_dayobs(tai_unix)
    assert astro.dayobs_int(tai_unix) == int(ref_dayobs(tai_unix))
    assert astro.eop_status(tai_unix) == ref_eop_status(tai_unix)


def assert_sky_values_match(ra: float, dec: float, tai_unix: float) -> None:
    ref_alt, ref_az, ref_ha = ref_observed(ra, dec, tai_unix)
    alt, az, ha = astro.alt_az_ha(ra, dec, tai_unix)
    assert abs(alt - ref_alt) <= 1e-7
    assert abs((az - ref_az + 180.0) % 360.0 - 180.0) <= 1e-7
    assert abs((ha - ref_ha + 12.0) % 24.0 - 12.0) <= 1e-8
    assert 0.0 <= az <= 360.0 and -12.0 <= ha < 12.0
    # The one-pass function and the separate ones give the same numbers.
    assert astro.alt_az(ra, dec, tai_unix) == (alt, az)
    assert astro.hour_angle_hours(ra, dec, tai_unix) == ha
    p = astro.observed_pointing(ra, dec, tai_unix)
    assert (p.alt_deg, p.az_deg, p.ha_hours) == (alt, az, ha)
    assert p.eop == ref_eop_status(tai_unix)
    assert p.airmass == astro.airmass(alt)


@given(
    tai_unix=st.floats(min_value=FAST_MIN, max_value=FAST_MAX, allow_nan=False),
    ra=st.floats(min_value=0.0, max_value=360.0, exclude_max=True),
    dec=st.floats(min_value=-90.0, max_value=90.0),
)
@settings(max_examples=200, deadline=None)
def test_fast_path_matches_astropy_time_route(tai_unix, ra, dec):
    assert_time_values_match(tai_unix)
    assert_sky_values_match(ra, dec, tai_unix)


@given(tai_unix=st.floats(min_value=LEAP_START - 3.0, max_value=LEAP_START + 3.0))
@settings(max_examples=150, deadline=None)
def test_fast_path_around_2016_leap_second(tai_unix):
    assert_time_values_match(tai_unix)
    assert_sky_values_match(83.6, -5.4, tai_unix)


@pytest.mark.parametrize(
    "offset, expected",
    [
        (-1.0, "2016-12-31T23:59:59.000"),
        (-0.0005, "2016-12-31T23:59:60.000"),  # rounds up into the leap second
        (0.0, "2016-12-31T23:59:60.000"),
        (0.5, "2016-12-31T23:59:60.500"),
        (0.9994, "2016-12-31T23:59:60.999"),
        (0.9996, "2017-01-01T00:00:00.000"),
        (1.0, "2017-01-01T00:00:00.000"),
        (1.25, "2017-01-01T00:00:00.250"),
    ],
)
def test_utc_iso_leap_second_strings(offset, expected):
    assert astro.utc_iso(LEAP_START + offset) == expected
    assert astro.utc_iso(LEAP_START + offset) == str(ref_time(LEAP_START + offset).utc.isot)
    assert_time_values_match(LEAP_START + offset)


def utc_minute_start_tai_unix(mjd: int, minute: int) -> float:
    """TAI unix seconds of the start of a UTC minute (via astropy)."""
    t = Time(float(mjd), minute / 1440.0, format="mjd", scale="utc")
    return float(t.unix_tai)


@given(
    mjd=st.integers(min_value=57023, max_value=62100),  # 2015-01-01 .. 2028-12
    minute=st.sampled_from([0, 1, 59, 60, 719, 720, 1438, 1439]) | st.integers(0, 1439),
    eps=st.sampled_from([0.0, 1e-7, -1e-7, 1e-6, -1e-6, 1e-3, -1e-3, 0.5, -0.5, 29.9, -29.9]),
    clear_memo=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_fast_path_at_utc_minute_and_day_edges(mjd, minute, eps, clear_memo):
    if clear_memo:
        astro._eop_memo.clear()
    tai_unix = utc_minute_start_tai_unix(mjd, minute) + eps
    assume(tai_unix <= FAST_MAX)
    assert_time_values_match(tai_unix)
    assert_sky_values_match(200.0, -60.0, tai_unix)


@pytest.mark.parametrize("mjd", [57753, 57754, 57755])  # 2016-12-31 (leap), 2017-01-01, 2017-01-02
@pytest.mark.parametrize("eps", [-1e-6, -1e-7, 0.0, 1e-7, 1e-6])
def test_fast_path_at_midnight_around_leap_second(mjd, eps):
    tai_unix = utc_minute_start_tai_unix(mjd, 0) + eps
    assert_time_values_match(tai_unix)
    assert_sky_values_match(10.0, -89.0, tai_unix)
    assert_sky_values_match(300.0, 20.0, tai_unix)


@given(
    tai_unix=st.floats(min_value=IERS_END, max_value=FAST_MAX, allow_nan=False),
    ra=st.floats(min_value=0.0, max_value=360.0, exclude_max=True),
    dec=st.floats(min_value=-90.0, max_value=90.0),
)
@settings(max_examples=80, deadline=None)
def test_fast_path_beyond_iers_table(tai_unix, ra, dec):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_time_values_match(tai_unix)
        assert_sky_values_match(ra, dec, tai_unix)


def test_beyond_iers_table_holds_last_values():
    late = tai_unix_of_utc_calendar(2028, 6, 1, 0, 0, 0)
    assert astro.eop_status(late) == "extrapolated"
    t = ref_time(late).utc
    table = iers.earth_orientation_table.get()
    dut1, xp, yp, status = astro._eop_scalar(float(t.jd1), float(t.jd2))
    assert dut1 == pytest.approx(table["UT1_UTC"][-1].to_value(u.s), abs=1e-15)
    assert xp == pytest.approx(table["PM_x"][-1].to_value(u.rad), abs=1e-18)
    assert yp == pytest.approx(table["PM_y"][-1].to_value(u.rad), abs=1e-18)
    assert status == iers.TIME_BEYOND_IERS_RANGE


def test_dubious_years_take_the_astropy_route():
    # From 2029 ERFA flags UTC as "dubious": same values and same warnings.
    t = tai_unix_of_utc_calendar(2031, 6, 1, 3, 0, 0)
    with pytest.warns(erfa.ErfaWarning):
        iso = astro.utc_iso(t)
    with pytest.warns(erfa.ErfaWarning):
        ref = str(ref_time(t).utc.isot)
    assert iso == ref
    with pytest.warns(erfa.ErfaWarning):
        assert_time_values_match(t)
        assert_sky_values_match(120.0, -45.0, t)


@pytest.mark.parametrize("n", [0, 1, 123, 499, 500, 998, 999])
def test_iso_millisecond_rounding_matches_astropy(n):
    base = tai_unix_of_tai_calendar(2026, 3, 1, 23, 59, 59)
    for x in (base + n / 1000.0 + 0.0005, base + n / 1000.0 + 0.00049999, base + n / 1000.0 + 0.0004):
        assert astro.tai_iso(x) == str(ref_time(x).tai.isot)
        assert astro.utc_iso(x) == str(ref_time(x).utc.isot)


@given(
    tai_unix=st.floats(min_value=-3e9, max_value=4e9, allow_nan=False)
    | st.floats(min_value=FAST_MIN, max_value=FAST_MAX, allow_nan=False)
)
@settings(max_examples=300, deadline=None)
def test_tai_jd_is_bit_identical_to_time(tai_unix):
    t = ref_time(tai_unix)
    assert astro._tai_jd(tai_unix) == (float(t.jd1), float(t.jd2))
    if FAST_MIN <= tai_unix <= FAST_MAX:
        utc = t.utc
        assert astro._utc_jd(*astro._tai_jd(tai_unix)) == (float(utc.jd1), float(utc.jd2))


@given(
    val1=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    val2=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    divisor=st.sampled_from([None, 86400.0]),
)
@settings(max_examples=300, deadline=None)
def test_day_frac_replica_is_bit_identical(val1, val2, divisor):
    day, frac = astropy_day_frac(np.float64(val1), np.float64(val2), divisor=divisor)
    assert astro._day_frac(val1, val2, divisor=divisor) == (float(day), float(frac))


@given(tai_unix=st.floats(min_value=FAST_MIN, max_value=FAST_MAX, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_eop_memo_matches_astropy_iers(tai_unix):
    t = ref_time(tai_unix).utc
    table = iers.earth_orientation_table.get()
    ref_dut1, ref_status = table.ut1_utc(t.jd1, t.jd2, return_status=True)
    ref_xp, ref_yp = table.pm_xy(t.jd1, t.jd2)
    dut1, xp, yp, status = astro._eop_scalar(float(t.jd1), float(t.jd2))
    assert abs(dut1 - ref_dut1.to_value(u.s)) < 1e-14  # s
    assert abs(xp - ref_xp.to_value(u.rad)) < 1e-18  # rad
    assert abs(yp - ref_yp.to_value(u.rad)) < 1e-18
    assert status == int(ref_status)


def test_vectorised_paths_match_reference():
    rng = np.random.default_rng(20261125)
    ts = rng.uniform(FAST_MIN, FAST_MAX, 40)
    ras = rng.uniform(0.0, 360.0, 40)
    decs = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 40)))
    # Arrays of instants (astropy IERS route) ...
    alts, azs = astro.alt_az_many(ras, decs, ts)
    has = astro.hour_angle_hours_many(ras, decs, ts)
    # ... and many positions at one instant (fast time path).
    alts1, azs1 = astro.alt_az_many(ras, decs, ts[0])
    has1 = astro.hour_angle_hours_many(ras, decs, ts[0])
    for k in range(len(ts)):
        ref_alt, ref_az, ref_ha = ref_observed(ras[k], decs[k], ts[k])
        assert abs(alts[k] - ref_alt) <= 1e-7
        assert abs((azs[k] - ref_az + 180.0) % 360.0 - 180.0) <= 1e-7
        assert abs((has[k] - ref_ha + 12.0) % 24.0 - 12.0) <= 1e-8
        ref_alt, ref_az, ref_ha = ref_observed(ras[k], decs[k], ts[0])
        assert abs(alts1[k] - ref_alt) <= 1e-7
        assert abs((azs1[k] - ref_az + 180.0) % 360.0 - 180.0) <= 1e-7
        assert abs((has1[k] - ref_ha + 12.0) % 24.0 - 12.0) <= 1e-8


def test_input_types_agree():
    x = tai_unix_of_utc_calendar(2026, 11, 25, 3, 4, 6)
    ref = (astro.tai_iso(x), astro.utc_iso(x), astro.mjd_tai(x), astro.dayobs(x), astro.alt_az_ha(1.0, -2.0, x))
    for v in (int(x), np.float64(x), np.int64(int(x)), np.array(x)):
        got = (astro.tai_iso(v), astro.utc_iso(v), astro.mjd_tai(v), astro.dayobs(v), astro.alt_az_ha(1.0, -2.0, v))
        assert got[:4] == ref[:4]
        assert got[4] == pytest.approx(ref[4], abs=1e-9)
    # Non-finite input is rejected by astropy, as before.
    for fn in (astro.tai_iso, astro.utc_iso, astro.mjd_utc, astro.dayobs, astro.eop_status):
        with pytest.raises(ValueError):
            fn(float("nan"))
    with pytest.raises(ValueError):
        astro.alt_az(1.0, 2.0, float("inf"))


def test_site_constants_match_earthlocation():
    assert astro._SITE_LON_RAD == pytest.approx(astro.SITE.lon.to_value(u.rad), abs=1e-15)
    assert astro._SITE_LAT_RAD == pytest.approx(astro.SITE.lat.to_value(u.rad), abs=1e-15)
    assert astro._SITE_HEIGHT_M == pytest.approx(astro.SITE.height.to_value(u.m), abs=1e-9)
    assert isinstance(astro.SITE, EarthLocation)
    assert "SITE" in dir(astro)


def test_import_does_not_need_astropy_coordinates():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import header._astro_erfa as a\n"
        "a.preload(); a.alt_az_ha(10.0, -20.0, 1.8e9); a.utc_iso(1.8e9); a.observed_pointing(1.0, 2.0, 1.8e9)\n"
        "assert 'astropy.coordinates' not in sys.modules\n"
        "from header._astro_erfa import SITE\n"
        "assert type(SITE).__name__ == 'EarthLocation' and a.SITE is SITE\n"
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
