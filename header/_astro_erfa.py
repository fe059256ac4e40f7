"""Time and sky computations for Rubin headers, done with astropy/ERFA (private implementation).

Callers use :mod:`header.astro`, the public API; this module holds the scalar ERFA fast path, the
astropy route, and the internals the tests compare bit for bit with astropy.

Why this module exists
----------------------
Header values such as DATE-OBS, DAYOBS, HASTART or AMSTART are easy to get
subtly wrong (wrong time scale, wrong epoch of "TAI unix", mean instead of
apparent RA, refraction folded into the airmass...).  Every function here
names the scale it works in and delegates the astronomy to astropy and to
ERFA (``pyerfa``, the IAU SOFA library that astropy itself uses).  Nothing
in this module hand-rolls a time-scale conversion.

Time input
----------
SAL timestamps are "TAI unix seconds": SI seconds since
1970-01-01T00:00:00 TAI, i.e. the UTC unix time plus TAI-UTC (37 s since
2017).  That is exactly astropy's ``unix_tai`` format (whose epoch is
1970-01-01T00:00:00 TAI, equivalently 1969-12-31T23:59:51.999918 UTC), so
:func:`sal_time` is ``Time(tai_unix, format='unix_tai')``.  Note that
``Time(tai_unix, format='unix', scale='tai')`` is *wrong* (37 s late):
astropy's ``unix`` format always counts from 1970-01-01T00:00:00 UTC.

Earth orientation data (no network)
-----------------------------------
At import this module sets ``iers.conf.auto_download = False`` (astropy must
never reach the network) and ``iers.conf.auto_max_age = None``.  The second
setting is needed because the bundled IERS-A table (package
``astropy-iers-data``) is "stale" by astropy's default 30-day rule as soon as
the package is a month old, after which astropy refuses to use its
predictions at all.  With ``auto_max_age = None`` the bundled measured values
and predictions are used, and for instants after the end of the table
(about one year after the package date) the last tabulated UT1-UTC and polar
motion are held constant.  UT1-UTC predictions degrade by a few ms per month,
i.e. well below an arcsecond for the hour angle over the 2024-2027 range the
bundled data cover; :func:`eop_status` tells a caller which regime applies
so it can record provenance.  ``iers_degraded_accuracy`` is not changed: it
only governs stand-alone IERS-B tables, which nothing here uses.

These settings are process-wide (astropy configuration is global).

Scalar fast path
----------------
Building astropy ``Time`` objects and converting their scales costs far more
than the ERFA arithmetic underneath, so for scalar inputs the functions call
the same ERFA routines astropy calls, in the same order, on plain floats:

* TAI unix -> two-part TAI JD: astropy's ``unix_tai`` ``set_jds`` arithmetic
  (its exact two-double ``day_frac``), giving the very same ``jd1, jd2``;
  TAI -> UTC is ``erfa.taiutc`` + ``day_frac`` as in ``Time._set_scale``;
  ISO strings and DAYOBS come from ``erfa.d2dtf`` with the precision astropy
  uses (3 for ``isot``, 9 for ``ymdhms``) and astropy's format string.
  Results are bit-identical to the ``Time`` route (leap seconds included:
  ``utc_iso`` reads ``23:59:60.xxx`` inside one).  astropy's one-off
  leap-second table update is triggered (through ``Time``) before the first
  direct ERFA call, so both routes use the same table.
* alt/az and hour angle: the ``apco13`` chain split into its ERFA parts
  (``utctai``, ``taitt``, ``utcut1``, ``epv00``, ``pnm06a``, ``bpn2xy``,
  ``s06``, ``era00``, ``sp00``, ``apco``), as astropy's ``ErfaAstrom`` does,
  so that Earth position and the CIP are computed once and shared with the
  geocentric ``apci`` used for the hour angle.  The topocentric result is
  bit-identical to ``apco13``.  The geocentric parameters are evaluated at
  TT instead of TDB (as ``apco13`` itself does; TDB-TT < 1.7 ms), which
  changes the apparent place by < 1e-13 rad: measured hour-angle
  differences from ``apci13`` at TDB are < 1e-12 h up to |dec| = 60 deg and
  < 1e-9 h within 1 deg of a celestial pole (where RA is ill-conditioned).
* Earth orientation: UT1-UTC, polar motion and their status are memoized per
  cell of 1/1440 UTC day (one UTC minute; 60.0007 s on a leap-second day).
  Each cell holds two samples taken with astropy's own IERS code
  (``ut1_utc``/``pm_xy`` of ``iers.earth_orientation_table``) at the cell
  start and middle, and a scalar instant is linearly interpolated between
  them.  The 1440 cells of a UTC day are filled together, by one vectorised
  call (~1 ms, once per day and process; :data:`_EOP_MEMO_DAYS` days are
  kept).  astropy interpolates the daily table linearly in UTC MJD and cells
  never straddle a day, so this reproduces astropy's values up to rounding:
  measured differences are < 2e-16 s in UT1-UTC, and alt/az came out
  bit-identical in all comparisons.  Held values past the table end and the
  status (a per-day property in astropy) are reproduced exactly.  Cells are
  looked up with astropy's own day split (``floor(jd1 - MJD0 + jd2)``), so
  even an instant that astropy's rounding puts on the next day (within 1 us
  of UTC midnight) gets astropy's table segment.  The memo assumes
  ``iers.earth_orientation_table`` is not swapped at run time;
  :func:`preload` clears it.

Anything unusual goes through the original astropy ``Time`` route instead:
array inputs, non-float inputs, non-finite values, and any non-zero ERFA
status (e.g. "dubious year" from 2029 on with the bundled leap-second
table), so errors and warnings are exactly those astropy gives.  The
``*_many`` functions take arrays of instants through ``Time`` and astropy's IERS code
(no memo), then use the same ERFA chain.

Memory
------
:data:`SITE` is built on first access (module ``__getattr__``): the site
constants the computations need come from ERFA (``gd2gc``/``gc2gd``, as
``EarthLocation`` does), so importing this module does not import
``astropy.coordinates``.  The default Earth orientation table is read the
first time it is needed as ``IERS_Auto.open()`` reads it, in an order that
peaks lower, and only the columns astropy's interpolation reads are kept
(it stays astropy's cached ``IERS_Auto`` table, used by every route; see
:func:`_eop_table`).  A table a caller sets with
``iers.earth_orientation_table.set`` is used as it is.

Cost
----
After a one-off warm-up (reading the bundled IERS and leap-second tables,
~0.2-0.5 s; call :func:`preload` at start-up to pay it early), a scalar call
costs about: ``mjd_tai``/``mjd_utc`` 2-5 us, ``eop_status`` 5 us,
``tai_iso``/``utc_iso``/``dayobs`` 6-10 us, ``exposure_times`` 30 us,
``alt_az``/``hour_angle_hours``/:func:`alt_az_ha`/``observed_pointing``
90-95 us (``epv00`` and ``pnm06a`` are 65 us of that); the first call in a
new UTC day adds ~1 ms (Earth-orientation memo).  The ``*_many`` variants
take arrays: ~0.25 ms for hundreds of pointings at one instant, plus
~65 us per distinct instant.  Inputs that take the astropy route (see
above) cost 0.1-2 ms as before.
"""

from __future__ import annotations

import functools
import gc
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import astropy.units as u
import erfa
import numpy as np
from astropy.time import Time
from astropy.utils import iers
from erfa import ufunc as _erfa_ufunc

from header.site import SITE_GEODETIC as _SITE_GEODETIC

if TYPE_CHECKING:  # pragma: no cover - typing only; built lazily, see __getattr__
    from astropy.coordinates import EarthLocation

    SITE: EarthLocation

# Never download; use the bundled tables even when astropy considers them old.
iers.conf.auto_download = False
iers.conf.auto_max_age = None

__all__ = [
    "SITE",
    "TAI_UTC_NOTE",
    "sal_time",
    "tai_iso",
    "utc_iso",
    "mjd_tai",
    "mjd_utc",
    "dayobs",
    "dayobs_int",
    "exposure_times",
    "alt_az",
    "alt_az_many",
    "alt_az_ha",
    "zenith_distance",
    "airmass",
    "hour_angle_hours",
    "hour_angle_hours_many",
    "ObservedPointing",
    "observed_pointing",
    "eop_status",
    "preload",
    "usable_time",
]

TAI_UTC_NOTE = "SAL timestamps are TAI unix seconds: UTC unix time + (TAI-UTC)"


# The constants the ERFA calls need, obtained as EarthLocation.from_geodetic
# + .lon/.lat/.height do (geodetic -> geocentric -> geodetic, WGS84), but
# without importing astropy.coordinates.
_SITE_XYZ_M = erfa.gd2gc(
    erfa.WGS84, math.radians(_SITE_GEODETIC[0]), math.radians(_SITE_GEODETIC[1]), _SITE_GEODETIC[2]
)
_SITE_LON_RAD, _SITE_LAT_RAD, _SITE_HEIGHT_M = (
    float(v) for v in erfa.gc2gd(erfa.WGS84, _SITE_XYZ_M)
)
_HALF_DAY_S = 43200.0
#: SAL times this module accepts: 1970 to 2200 (TAI unix seconds). Beyond, dates are not FITS
#: dates (five-digit years) and ERFA refuses them; NaN and infinity never are times.
MAX_TAI_UNIX = 7.25e9


def usable_time(x: Any) -> float | None:
    """``x`` as TAI unix seconds if it is a real number in [1970, 2200), else None."""
    if isinstance(x, (float, int, np.floating, np.integer)) and not isinstance(x, (bool, np.bool_)):
        try:
            xf = float(x)
        except OverflowError:
            return None
        if 0.0 <= xf < MAX_TAI_UNIX:
            return xf
    return None


def __getattr__(name: str) -> Any:
    """Build :data:`SITE` (an astropy ``EarthLocation``) on first access.

    ``SITE``: Rubin Observatory (Simonyi and Auxiliary telescopes), Cerro
    Pachón, WGS84.  Deferred so that importing this module does not import
    ``astropy.coordinates`` (~4 MB of RSS on top of ``astropy.time`` and
    ``astropy.utils.iers``); the computations here do not need it.
    """
    if name == "SITE":
        from astropy.coordinates import EarthLocation

        lon, lat, height = _SITE_GEODETIC
        site = EarthLocation.from_geodetic(lon=lon * u.deg, lat=lat * u.deg, height=height * u.m)
        globals()["SITE"] = site
        return site
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"SITE"})


# --------------------------------------------------------------------------
# Scalar plumbing: astropy's Time arithmetic on plain floats
# --------------------------------------------------------------------------
_DJM0 = float(erfa.DJM0)  # 2400000.5, MJD zero point (also iers.MJD_ZERO)
_DAYSEC = float(erfa.DAYSEC)  # 86400.0
_EOP_CELLS_PER_DAY = 1440  # memo cell: one UTC minute
_EOP_MEMO_DAYS = 16  #: Earth-orientation memo size, in UTC days
_REFA, _REFB = (float(v) for v in erfa.refco(0.0, 0.0, 0.0, 0.0))  # what apco13 uses for phpa = 0

_eop_memo: dict[int, list[tuple[float, ...]]] = {}


def _two_sum(a: float, b: float) -> tuple[float, float]:
    """astropy.time.utils.two_sum on floats (exact sum as two doubles)."""
    x = a + b
    eb = x - a
    ea = x - eb
    eb = b - eb
    ea = a - ea
    return x, ea + eb


def _split(a: float) -> tuple[float, float]:
    c = 134217729.0 * a  # 2**27 + 1
    abig = c - a
    ah = c - abig
    return ah, a - ah


def _two_product(a: float, b: float) -> tuple[float, float]:
    """astropy.time.utils.two_product on floats (exact product as two doubles)."""
    x = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    y = x - ah * bh
    y -= al * bh
    y -= ah * bl
    y = al * bl - y
    return x, y


def _day_frac(val1: float, val2: float, divisor: float | None = None) -> tuple[float, float]:
    """astropy.time.utils.day_frac on Python floats (same operations, same bits).

    Used to split/normalise two-part JDs exactly as astropy's ``Time`` does;
    numpy's round-half-even is Python's ``round``.
    """
    sum12, err12 = _two_sum(val1, val2)
    if divisor is not None:
        q1 = sum12 / divisor
        p1, p2 = _two_product(q1, divisor)
        d1, d2 = _two_sum(sum12, -p1)
        d2 += err12
        d2 -= p2
        q2 = (d1 + d2) / divisor
        sum12, err12 = _two_sum(q1, q2)
    day = float(round(sum12))
    frac, check = _two_sum(sum12 - day, err12)
    sign = (check > 0.0) - (check < 0.0)
    if frac * sign != 0.5:
        day += round(frac)
    else:
        day += round(frac + 2 * check)
    frac = sum12 - day
    frac += err12
    return day, frac


@functools.cache
def _epoch() -> tuple[float, float]:
    """astropy's unix_tai epoch as a two-part TAI JD, after astropy's leap-second table check.

    Computed on first use (self-initialising: no warm-up order to respect). The ``.utc``
    conversion makes astropy run its leap-second table update (``update_leap_seconds``) before
    any direct ERFA call, so the fast path uses the same table as ``Time`` does.
    """
    t0 = sal_time(0.0)
    sal_time(1.7e9).utc  # noqa: B018  (side effect: astropy's leap-second check)
    return float(t0.jd1), float(t0.jd2)


def _as_float(x: Any) -> float | None:
    """``x`` as a float if it is a plain real scalar (fast path), else None."""
    if isinstance(x, (float, int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        xf = float(x)
        if math.isfinite(xf):
            return xf
    return None


def _tai_jd(tai_unix: float) -> tuple[float, float]:
    """Two-part TAI JD of TAI unix seconds, bit-identical to ``sal_time``.

    astropy's ``TimeFromEpoch.set_jds`` for ``unix_tai`` (epoch scale TAI).
    """
    day, frac = _day_frac(tai_unix, 0.0, divisor=_DAYSEC)
    e1, e2 = _epoch()
    jd1 = e1 + day
    jd2 = e2 + frac
    extra = round(jd2)
    return jd1 + extra, jd2 - extra


def _utc_jd(tai1: float, tai2: float) -> tuple[float, float] | None:
    """TAI -> UTC as ``Time._set_scale`` does (``erfa.taiutc`` + ``day_frac``).

    None if ERFA reports a non-zero status (the caller then takes the astropy
    route, which raises or warns exactly as before).
    """
    u1, u2, status = _erfa_ufunc.taiutc(tai1, tai2)
    if status:
        return None
    return _day_frac(float(u1), float(u2))


def _iso(scale: bytes, jd1: float, jd2: float) -> str | None:
    """astropy's ``isot`` string (precision 3) from a two-part JD."""
    iy, im, iday, ihmsf, status = _erfa_ufunc.d2dtf(scale, 3, jd1, jd2)
    if status:
        return None
    h, m, s, f = ihmsf.item()
    return f"{int(iy):d}-{int(im):02d}-{int(iday):02d}T{h:02d}:{m:02d}:{s:02d}.{f:03d}"


# --------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------
def sal_time(tai_unix: Any) -> Time:
    """Turn SAL "TAI unix seconds" into an astropy Time (scale TAI).

    Parameters
    ----------
    tai_unix : float or array-like
        Seconds (SI) since 1970-01-01T00:00:00 TAI, as in SAL timestamps
        (``private_sndStamp``, ``timestampAcquisitionStart``...).

    Returns
    -------
    astropy.time.Time
        The instant, in the TAI scale.

    Notes
    -----
    astropy's ``unix_tai`` format has exactly the SAL definition (it follows
    Linux ``CLOCK_TAI``), so for 2017 onwards ``tai_unix - 37`` is the UTC
    unix time of the same instant.  Costs ~50 us; the other time functions
    do not build a ``Time`` for scalar input (see the module docstring).
    """
    return Time(tai_unix, format="unix_tai", scale="tai")


def tai_iso(tai_unix: float) -> str:
    """ISO-8601 TAI date, for DATE-OBS/DATE-BEG/DATE-END (TIMESYS = 'TAI').

    Parameters
    ----------
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    str
        ``'YYYY-MM-DDThh:mm:ss.sss'`` in TAI, rounded to the millisecond.
    """
    x = _as_float(tai_unix)
    if x is not None:
        out = _iso(b"TAI", *_tai_jd(x))
        if out is not None:
            return out
    return str(sal_time(tai_unix).tai.isot)


def utc_iso(tai_unix: float) -> str:
    """ISO-8601 UTC date of the same instant, for DATE (FITS requires UTC).

    Parameters
    ----------
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    str
        ``'YYYY-MM-DDThh:mm:ss.sss'`` in UTC (37 s behind TAI since 2017),
        rounded to the millisecond; a leap second reads ``23:59:60.xxx``.
    """
    x = _as_float(tai_unix)
    if x is not None:
        utc = _utc_jd(*_tai_jd(x))
        if utc is not None:
            out = _iso(b"UTC", *utc)
            if out is not None:
                return out
    return str(sal_time(tai_unix).utc.isot)


def mjd_tai(tai_unix: float) -> float:
    """Modified Julian Date in TAI, for MJD-OBS/MJD-BEG/MJD-END.

    Parameters
    ----------
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    float
        MJD (d), TAI scale.
    """
    x = _as_float(tai_unix)
    if x is not None:
        jd1, jd2 = _tai_jd(x)
        return (jd1 - _DJM0) + jd2  # astropy's TimeMJD.to_value
    return float(sal_time(tai_unix).tai.mjd)


def mjd_utc(tai_unix: float) -> float:
    """Modified Julian Date in UTC, for MJD (file-written date, FITS: UTC).

    Parameters
    ----------
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    float
        MJD (d), UTC scale (quasi-JD on a leap-second day, as in ERFA).
    """
    x = _as_float(tai_unix)
    if x is not None:
        utc = _utc_jd(*_tai_jd(x))
        if utc is not None:
            return (utc[0] - _DJM0) + utc[1]
    return float(sal_time(tai_unix).utc.mjd)


def dayobs(tai_unix: float) -> str:
    """Observing day: TAI calendar date of (instant - 12 h), as YYYYMMDD.

    The day therefore rolls over at 12:00 TAI (about 08:59 local time in
    Chile), so that one night never spans two DAYOBS values.

    Parameters
    ----------
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    str
        ``'YYYYMMDD'``.
    """
    # TAI has no leap seconds, so subtracting 43200 s is exactly 12 h.  The
    # calendar fields are those of astropy's ``ymdhms`` (erfa.d2dtf rounded
    # to the nanosecond), so 11:59:59.9996 stays on the previous day.
    x = _as_float(tai_unix)
    if x is not None:
        iy, im, iday, _ihmsf, status = _erfa_ufunc.d2dtf(b"TAI", 9, *_tai_jd(x - _HALF_DAY_S))
        if not status:
            return f"{int(iy):04d}{int(im):02d}{int(iday):02d}"
    ymdhms = sal_time(float(tai_unix) - _HALF_DAY_S).tai.ymdhms
    return f"{int(ymdhms['year']):04d}{int(ymdhms['month']):02d}{int(ymdhms['day']):02d}"


def dayobs_int(tai_unix: float) -> int:
    """:func:`dayobs` as an integer (YYYYMMDD), as Butler and SAL use it.

    Parameters
    ----------
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    int
        YYYYMMDD.
    """
    return int(dayobs(tai_unix))


def exposure_times(start_tai: float, end_tai: float) -> dict[str, object]:
    """Begin/end/mid dates of an exposure, all explicitly TAI.

    Parameters
    ----------
    start_tai, end_tai : float
        TAI unix seconds (s) of the start and end of integration.

    Returns
    -------
    dict
        ``DATE-BEG``, ``DATE-END``, ``DATE-AVG`` (ISO, TAI), ``MJD-BEG``,
        ``MJD-END``, ``MJD-AVG`` (d, TAI) and ``TELAPSE`` (s).
    """
    mid = 0.5 * (float(start_tai) + float(end_tai))
    return {
        "DATE-BEG": tai_iso(start_tai),
        "DATE-END": tai_iso(end_tai),
        "DATE-AVG": tai_iso(mid),
        "MJD-BEG": mjd_tai(start_tai),
        "MJD-END": mjd_tai(end_tai),
        "MJD-AVG": mjd_tai(mid),
        "TELAPSE": float(end_tai) - float(start_tai),
    }


# --------------------------------------------------------------------------
# Earth orientation
# --------------------------------------------------------------------------
#: What astropy's interpolation reads of an Earth orientation table (``IERS.ut1_utc``, ``pm_xy``,
#: ``dcip_xy`` and their status flags): the columns kept of the default table.
_EOP_COLUMNS = ["MJD", "UT1_UTC", "UT1Flag", "PM_x", "PM_y", "PolPMFlag", "dX_2000A", "dY_2000A", "NutFlag"]


def _eop_table() -> iers.IERS:
    """astropy's Earth orientation table (``iers.earth_orientation_table``).

    Of the default one, astropy's cached ``IERS_Auto`` table (read by
    :func:`_read_default_eop_table` if astropy has not read it yet), only :data:`_EOP_COLUMNS` are
    kept, and astropy's copy of the IERS-B table, which only that read uses, is released: 1 MB of
    columns instead of the 9 MB of both tables. Same rows, same interpolation, same values."""
    default = iers.IERS_Auto.iers_table
    if default is None or default.colnames != _EOP_COLUMNS:
        full = _read_default_eop_table() if default is None else default
        iers.IERS_Auto.iers_table = full[_EOP_COLUMNS]
        iers.IERS_B.close()
    return iers.earth_orientation_table.get()


def _read_default_eop_table() -> iers.IERS_Auto:
    """The table ``iers.IERS_Auto.open()`` reads (the bundled IERS-A file with the bundled IERS-B
    values substituted into it), read with a lower peak.

    Read by ``IERS_Auto.open()`` alone, IERS-B is parsed inside the IERS-A read while the IERS-A
    parse's garbage is still alive, and the process's RSS peaks some 95 MB above what it holds
    after. Here IERS-B is read first and its parse's garbage collected before IERS-A is read: the
    peak is 50 MB above."""
    iers.IERS_B.open()
    gc.collect()
    return iers.IERS_Auto.read()


def _eop(t: Time) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UT1-UTC (s) and polar motion (rad) from the bundled IERS table.

    Uses the same table and interpolation as astropy, but without astropy's
    "beyond IERS range" warning: past the end of the table the last values
    are held (see the module docstring).  Array route (no memo).
    """
    table = _eop_table()
    utc = t.utc
    dut1 = table.ut1_utc(utc.jd1, utc.jd2)
    xp, yp = table.pm_xy(utc.jd1, utc.jd2)
    return (
        np.asarray(dut1.to_value(u.s)),
        np.asarray(xp.to_value(u.rad)),
        np.asarray(yp.to_value(u.rad)),
    )


def _eop_day(mjd: int) -> list[tuple[float, ...]]:
    """Fill the memo cells of UTC day ``mjd``: two astropy IERS samples per cell.

    Cell ``k`` (UTC minute ``k`` of the day) is sampled at day fractions
    ``k/1440`` and ``(k+0.5)/1440``.  All 2880 samples come from one
    vectorised call each of ``ut1_utc`` (with status) and ``pm_xy`` (which
    applies astropy's range check, as :func:`_eop` does).
    """
    table = _eop_table()
    n = _EOP_CELLS_PER_DAY
    k = np.arange(n)
    f0 = k / n
    f1 = (k + 0.5) / n
    jd2 = np.concatenate([f0, f1])
    jd1 = np.full(jd2.shape, _DJM0 + mjd)
    dut1, status = table.ut1_utc(jd1, jd2, return_status=True)
    xp, yp = table.pm_xy(jd1, jd2)
    dut1 = np.asarray(dut1.to_value(u.s), dtype=float)
    xp = np.asarray(xp.to_value(u.rad), dtype=float)
    yp = np.asarray(yp.to_value(u.rad), dtype=float)
    cells = list(
        zip(
            f0.tolist(), (f1 - f0).tolist(),
            dut1[:n].tolist(), (dut1[n:] - dut1[:n]).tolist(),
            xp[:n].tolist(), (xp[n:] - xp[:n]).tolist(),
            yp[:n].tolist(), (yp[n:] - yp[:n]).tolist(),
            np.asarray(status)[:n].astype(int).tolist(),
        )
    )
    if len(_eop_memo) >= _EOP_MEMO_DAYS:
        _eop_memo.clear()
    _eop_memo[mjd] = cells
    return cells


def _eop_scalar(utc1: float, utc2: float) -> tuple[float, float, float, int]:
    """Memoized UT1-UTC (s), polar motion x, y (rad) and IERS status.

    The day split is astropy's (``IERS.mjd_utc``), so the cell lies on the
    table segment astropy would interpolate on; see the module docstring.
    """
    mjd = math.floor(utc1 - _DJM0 + utc2)
    frac = utc1 - (_DJM0 + mjd) + utc2
    cells = _eop_memo.get(mjd)
    if cells is None:
        cells = _eop_day(mjd)
    k = min(max(int(frac * _EOP_CELLS_PER_DAY), 0), _EOP_CELLS_PER_DAY - 1)
    f0, df, d0, dd, x0, dx, y0, dy, status = cells[k]
    w = (frac - f0) / df
    return d0 + w * dd, x0 + w * dx, y0 + w * dy, status


def _status_name(status: int) -> str:
    if status in (iers.FROM_IERS_B, iers.FROM_IERS_A):
        return "measured"
    if status == iers.FROM_IERS_A_PREDICTION:
        return "predicted"
    return "extrapolated"


def eop_status(tai_unix: float) -> str:
    """Quality of the Earth-orientation data used at this instant.

    Parameters
    ----------
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    str
        ``'measured'`` (IERS final/rapid values), ``'predicted'`` (IERS-A
        prediction) or ``'extrapolated'`` (outside the bundled table: last
        values held, sub-arcsecond to arcsecond accuracy).
    """
    x = _as_float(tai_unix)
    if x is not None:
        utc = _utc_jd(*_tai_jd(x))
        if utc is not None:
            return _status_name(_eop_scalar(*utc)[3])
    t = sal_time(tai_unix).utc
    table = _eop_table()
    _, status = table.ut1_utc(t.jd1, t.jd2, return_status=True)
    return _status_name(int(np.asarray(status)))


def preload() -> None:
    """Load the IERS and leap-second tables now rather than at first use.

    Costs a few tenths of a second once; call it at process start so the
    first exposure is not slowed down.  Empties the Earth-orientation memo
    (needed only if ``iers.earth_orientation_table`` was changed) and fills
    it for the current and the next UTC day (system clock), so that the
    first call of the night does not pay the ~1 ms fill.
    """
    _eop_memo.clear()
    _epoch()
    with warnings.catch_warnings():  # warm-up only: no "dubious year" noise
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        now = float(Time.now().unix_tai)
        for tai_unix in (now, now + 86400.0):
            hour_angle_hours(0.0, 0.0, tai_unix)
        hour_angle_hours_many(0.0, 0.0, np.array([now]))


# --------------------------------------------------------------------------
# Sky
# --------------------------------------------------------------------------
def _astroms_scalar(
    utc1: float, utc2: float, dut1: float, xp: float, yp: float
) -> tuple[Any, Any] | None:
    """Topocentric (apco13) and geocentric (apci) ERFA astrometry parameters.

    ``erfa.apco13`` split into its ERFA calls (bit-identical result) so that
    Earth's position/velocity and the CIP (X, Y, s) are computed once and
    also feed ``erfa.apci`` (geocentric, at TT; see the module docstring).
    Raw ERFA ufuncs; None on any non-zero ERFA status.
    """
    f = _erfa_ufunc
    tai1, tai2, j = f.utctai(utc1, utc2)
    if j:
        return None
    tt1, tt2, _ = f.taitt(tai1, tai2)
    ut11, ut12, j = f.utcut1(utc1, utc2, dut1)
    if j:
        return None
    ehpv, ebpv, _ = f.epv00(tt1, tt2)  # status ignored, as in apco13
    return _astroms_tt(tt1, tt2, ut11, ut12, ehpv, ebpv, xp, yp)


def _astroms_checked(utc1: Any, utc2: Any, dut1: Any, xp: Any, yp: Any) -> tuple[Any, Any]:
    """:func:`_astroms_scalar` for arrays: the calls that report a status go through the
    checking ``erfa.*`` wrappers (astropy's warnings and errors)."""
    tai1, tai2 = erfa.utctai(utc1, utc2)
    tt1, tt2 = erfa.taitt(tai1, tai2)
    ut11, ut12 = erfa.utcut1(utc1, utc2, dut1)
    ehpv, ebpv = erfa.epv00(tt1, tt2)
    return _astroms_tt(tt1, tt2, ut11, ut12, ehpv, ebpv, xp, yp)


def _astroms_tt(tt1: Any, tt2: Any, ut11: Any, ut12: Any, ehpv: Any, ebpv: Any, xp: Any, yp: Any) -> tuple[Any, Any]:
    """The rest of the ``apco13`` chain from TT, UT1 and Earth's position/velocity, plus ``apci``
    (these ERFA calls report no status: the ufuncs are what the wrappers call)."""
    f = _erfa_ufunc
    rbpn = f.pnm06a(tt1, tt2)
    x, y = f.bpn2xy(rbpn)
    s = f.s06(tt1, tt2, x, y)
    theta = f.era00(ut11, ut12)
    sp = f.sp00(tt1, tt2)
    ehp = ehpv["p"]
    astrom = f.apco(
        tt1, tt2, ebpv, ehp, x, y, s, theta,
        _SITE_LON_RAD, _SITE_LAT_RAD, _SITE_HEIGHT_M, xp, yp, sp, _REFA, _REFB,
    )
    astrom_geo = f.apci(tt1, tt2, ebpv, ehp, x, y, s)
    return astrom, astrom_geo


def _astroms_at(tai_unix: Any) -> tuple[Any, Any, int | None]:
    """(topocentric astrom, geocentric astrom, IERS status or None) at an instant.

    Scalar instants use the fast path (memoized EOP); arrays, and scalars
    the fast path declines, use ``Time`` and astropy's IERS code directly.
    """
    x = _as_float(tai_unix)
    if x is not None:
        utc = _utc_jd(*_tai_jd(x))
        if utc is not None:
            dut1, xp, yp, status = _eop_scalar(*utc)
            pair = _astroms_scalar(utc[0], utc[1], dut1, xp, yp)
            if pair is not None:
                return pair[0], pair[1], status
    t = sal_time(tai_unix)
    utc_t = t.utc
    dut1, xp, yp = _eop(t)
    astrom, astrom_geo = _astroms_checked(utc_t.jd1, utc_t.jd2, dut1, xp, yp)
    return astrom, astrom_geo, None


def _observed_scalar(
    ra_deg: float, dec_deg: float, tai_unix: float
) -> tuple[float, float, float, int | None]:
    """:func:`_observed` for scalars, as floats, plus the IERS status if known."""
    astrom, astrom_geo, status = _astroms_at(tai_unix)
    f = _erfa_ufunc
    rc = math.radians(ra_deg)
    dc = math.radians(dec_deg)
    ri_topo, di_topo = f.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom)
    aob, zob, _hob, _dob, _rob = f.atioq(ri_topo, di_topo, astrom)
    ri_geo, _di_geo = f.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom_geo)
    alt = 90.0 - math.degrees(float(zob))
    az = math.degrees(float(aob)) % 360.0
    ha = (math.degrees(float(astrom["eral"]) - float(ri_geo)) / 15.0 + 12.0) % 24.0 - 12.0
    return alt, az, ha, status


def _observed(ra_deg: Any, dec_deg: Any, tai_unix: Any) -> tuple[Any, Any, Any]:
    """Topocentric alt, az (deg) and hour angle (h) for ICRS positions.

    alt/az: ERFA ``apco13`` + ``atciq`` + ``atioq`` (the ``atco13`` chain):
    ICRS astrometric -> topocentric observed, IAU 2006/2000A, with UT1-UTC
    and polar motion from IERS, diurnal aberration, and refraction switched
    off (pressure 0).  Hour angle: local apparent sidereal time minus the
    geocentric apparent RA of date, computed as local Earth rotation angle
    (incl. polar motion, from ``apco13``) minus the geocentric CIRS RA
    (``apci`` + ``atciq``, i.e. ``atci13``); the equation of the origins
    cancels between the two.  ``apco13`` is evaluated through its ERFA parts
    so that the date-dependent work is shared (see the module docstring).

    Returns floats for scalar inputs, numpy arrays otherwise.
    """
    ra_f = _as_float(ra_deg)
    dec_f = _as_float(dec_deg)
    if ra_f is not None and dec_f is not None and _as_float(tai_unix) is not None:
        return _observed_scalar(ra_f, dec_f, tai_unix)[:3]
    astrom, astrom_geo, _ = _astroms_at(tai_unix)
    rc = np.radians(np.asarray(ra_deg, dtype=float))
    dc = np.radians(np.asarray(dec_deg, dtype=float))
    # Topocentric observed place (no refraction: phpa = 0).
    ri_topo, di_topo = erfa.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom)
    aob, zob, _hob, _dob, _rob = erfa.atioq(ri_topo, di_topo, astrom)
    # Geocentric apparent (CIRS) RA for the classical hour angle.
    ri_geo, _di_geo = erfa.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom_geo)
    alt = 90.0 - np.degrees(zob)
    az = np.mod(np.degrees(aob), 360.0)
    ha = np.mod(np.degrees(astrom["eral"] - ri_geo) / 15.0 + 12.0, 24.0) - 12.0
    return alt, az, ha


def alt_az(ra_deg: float, dec_deg: float, tai_unix: float) -> tuple[float, float]:
    """Topocentric altitude and azimuth of an ICRS position, no refraction.

    Refraction is left out on purpose: ELSTART/AMSTART describe geometry,
    and the header service has no reliable pressure/temperature at the
    start of an exposure.  Cost ~95 us after warm-up.

    Parameters
    ----------
    ra_deg, dec_deg : float
        ICRS right ascension and declination (deg).
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    tuple of float
        (altitude, azimuth) in deg; azimuth from north through east, [0, 360).
    """
    alt, az, _ = _observed(ra_deg, dec_deg, tai_unix)
    return float(alt), float(az)


def alt_az_ha(ra_deg: float, dec_deg: float, tai_unix: float) -> tuple[float, float, float]:
    """Altitude, azimuth and hour angle of an ICRS position in one pass.

    Same values as :func:`alt_az` and :func:`hour_angle_hours` (one ERFA
    pass instead of two; cost ~95 us after warm-up).

    Parameters
    ----------
    ra_deg, dec_deg : float
        ICRS right ascension and declination (deg).
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    tuple of float
        (altitude deg, azimuth deg in [0, 360), hour angle h in [-12, 12)).
    """
    alt, az, ha = _observed(ra_deg, dec_deg, tai_unix)
    return float(alt), float(az), float(ha)


def alt_az_many(ra_deg: Any, dec_deg: Any, tai_unix: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`alt_az` (inputs broadcast together).

    Cost ~1 ms for a few hundred positions at one instant, plus ~0.1 ms per
    distinct instant.

    Parameters
    ----------
    ra_deg, dec_deg : array-like
        ICRS right ascension and declination (deg).
    tai_unix : array-like
        TAI unix seconds (s).

    Returns
    -------
    tuple of numpy.ndarray
        (altitude, azimuth) in deg.
    """
    alt, az, _ = _observed(ra_deg, dec_deg, tai_unix)
    return np.asarray(alt, dtype=float), np.asarray(az, dtype=float)


def zenith_distance(alt_deg: float) -> float:
    """Zenith distance from altitude (deg); the two always add to 90 deg.

    Parameters
    ----------
    alt_deg : float
        Altitude (deg).

    Returns
    -------
    float
        Zenith distance (deg).
    """
    return 90.0 - float(alt_deg)


def airmass(alt_deg: float) -> float | None:
    """Plane-parallel airmass sec(z), or None at or below the horizon.

    sec(z) is what the summit pointing component reports and what DM
    expects in AMSTART/AMEND; returning None (an undefined FITS value)
    below the horizon avoids writing meaningless negative or infinite
    numbers.

    Parameters
    ----------
    alt_deg : float
        Altitude (deg), without refraction.

    Returns
    -------
    float or None
        Airmass (dimensionless), None if alt <= 0 or not finite.
    """
    alt = float(alt_deg)
    if not math.isfinite(alt) or alt <= 0.0:
        return None
    return 1.0 / math.cos(math.radians(zenith_distance(alt)))


def hour_angle_hours(ra_deg: float, dec_deg: float, tai_unix: float) -> float:
    """Local hour angle of an ICRS position: LAST minus apparent RA of date.

    The declination is needed because precession, nutation and aberration
    move the apparent RA by an amount that depends on it.  Cost ~95 us
    after warm-up.

    Parameters
    ----------
    ra_deg, dec_deg : float
        ICRS right ascension and declination (deg).
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    float
        Hour angle (h), wrapped to [-12, 12); positive west of the meridian.
    """
    _, _, ha = _observed(ra_deg, dec_deg, tai_unix)
    return float(ha)


def hour_angle_hours_many(ra_deg: Any, dec_deg: Any, tai_unix: Any) -> np.ndarray:
    """Vectorised :func:`hour_angle_hours` (inputs broadcast together).

    Parameters
    ----------
    ra_deg, dec_deg : array-like
        ICRS right ascension and declination (deg).
    tai_unix : array-like
        TAI unix seconds (s).

    Returns
    -------
    numpy.ndarray
        Hour angle (h) in [-12, 12).
    """
    _, _, ha = _observed(ra_deg, dec_deg, tai_unix)
    return np.asarray(ha, dtype=float)


@dataclass(frozen=True)
class ObservedPointing:
    """Everything the *START/*END pointing keywords need, from one call.

    Attributes
    ----------
    alt_deg, az_deg : float
        Topocentric altitude and azimuth (deg), no refraction.
    ha_hours : float
        Hour angle (h) in [-12, 12).
    zenith_distance_deg : float
        Zenith distance (deg).
    airmass : float or None
        sec(z), None at or below the horizon.
    eop : str
        :func:`eop_status` of the instant.
    """

    alt_deg: float
    az_deg: float
    ha_hours: float
    zenith_distance_deg: float
    airmass: float | None
    eop: str


def observed_pointing(ra_deg: float, dec_deg: float, tai_unix: float) -> ObservedPointing:
    """Alt, az, HA, zenith distance and airmass of an ICRS position at once.

    One ERFA pass, the IERS status coming from the same Earth-orientation
    lookup (~100 us after warm-up).

    Parameters
    ----------
    ra_deg, dec_deg : float
        ICRS right ascension and declination (deg).
    tai_unix : float
        TAI unix seconds (s).

    Returns
    -------
    ObservedPointing
    """
    alt, az, ha, status = _observed_scalar(float(ra_deg), float(dec_deg), tai_unix)
    return ObservedPointing(
        alt_deg=alt,
        az_deg=az,
        ha_hours=ha,
        zenith_distance_deg=zenith_distance(alt),
        airmass=airmass(alt),
        eop=_status_name(status) if status is not None else eop_status(tai_unix),
    )
