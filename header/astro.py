"""Time and sky computations for Rubin headers, done with astropy/ERFA.

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

Cost
----
After a one-off warm-up (reading the bundled IERS and leap-second tables,
~0.2-0.5 s; call :func:`preload` at start-up to pay it early), each scalar
call costs about 0.5-2 ms; the ``*_many`` variants take arrays and cost
roughly the same for hundreds of pointings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import erfa
import numpy as np
from astropy.coordinates import EarthLocation
from astropy.time import Time
from astropy.utils import iers

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
    "zenith_distance",
    "airmass",
    "hour_angle_hours",
    "hour_angle_hours_many",
    "ObservedPointing",
    "observed_pointing",
    "eop_status",
    "preload",
]

#: Rubin Observatory (Simonyi and Auxiliary telescopes), Cerro Pachón, WGS84.
SITE: EarthLocation = EarthLocation.from_geodetic(
    lon=-70.749417 * u.deg, lat=-30.244639 * u.deg, height=2663.0 * u.m
)

TAI_UTC_NOTE = "SAL timestamps are TAI unix seconds: UTC unix time + (TAI-UTC)"

_SITE_LON_RAD = float(SITE.lon.to_value(u.rad))
_SITE_LAT_RAD = float(SITE.lat.to_value(u.rad))
_SITE_HEIGHT_M = float(SITE.height.to_value(u.m))
_HALF_DAY_S = 43200.0


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
    unix time of the same instant.
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
    # TAI has no leap seconds, so subtracting 43200 s is exactly 12 h; the
    # calendar fields are taken unrounded (ymdhms), so 11:59:59.9996 stays on
    # the previous day.
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
def _eop(t: Time) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UT1-UTC (s) and polar motion (rad) from the bundled IERS table.

    Uses the same table and interpolation as astropy, but without astropy's
    "beyond IERS range" warning: past the end of the table the last values
    are held (see the module docstring).
    """
    table = iers.earth_orientation_table.get()
    utc = t.utc
    dut1 = table.ut1_utc(utc.jd1, utc.jd2)
    xp, yp = table.pm_xy(utc.jd1, utc.jd2)
    return (
        np.asarray(dut1.to_value(u.s)),
        np.asarray(xp.to_value(u.rad)),
        np.asarray(yp.to_value(u.rad)),
    )


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
    t = sal_time(tai_unix).utc
    table = iers.earth_orientation_table.get()
    _, status = table.ut1_utc(t.jd1, t.jd2, return_status=True)
    status = int(np.asarray(status))
    if status in (iers.FROM_IERS_B, iers.FROM_IERS_A):
        return "measured"
    if status == iers.FROM_IERS_A_PREDICTION:
        return "predicted"
    return "extrapolated"


def preload() -> None:
    """Load the IERS and leap-second tables now rather than at first use.

    Costs a few tenths of a second once; call it at process start so the
    first exposure is not slowed down.
    """
    hour_angle_hours(0.0, 0.0, 1.7e9 + 37.0)


# --------------------------------------------------------------------------
# Sky
# --------------------------------------------------------------------------
def _observed(
    ra_deg: Any, dec_deg: Any, tai_unix: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Topocentric alt, az (deg) and hour angle (h) for ICRS positions.

    alt/az: ERFA ``apco13`` + ``atciq`` + ``atioq`` (the ``atco13`` chain):
    ICRS astrometric -> topocentric observed, IAU 2006/2000A, with UT1-UTC
    and polar motion from IERS, diurnal aberration, and refraction switched
    off (pressure 0).  Hour angle: local apparent sidereal time minus the
    geocentric apparent RA of date, computed as local Earth rotation angle
    (incl. polar motion, from ``apco13``) minus the geocentric CIRS RA
    (``apci13`` + ``atciq``, i.e. ``atci13``); the equation of the origins
    cancels between the two.
    """
    t = sal_time(tai_unix)
    utc = t.utc
    tdb = t.tdb
    dut1, xp, yp = _eop(t)
    astrom, _eo = erfa.apco13(
        utc.jd1, utc.jd2, dut1,
        _SITE_LON_RAD, _SITE_LAT_RAD, _SITE_HEIGHT_M,
        xp, yp, 0.0, 0.0, 0.0, 0.0,
    )
    rc = np.radians(np.asarray(ra_deg, dtype=float))
    dc = np.radians(np.asarray(dec_deg, dtype=float))
    # Topocentric observed place (no refraction: phpa = 0 in apco13).
    ri_topo, di_topo = erfa.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom)
    aob, zob, _hob, _dob, _rob = erfa.atioq(ri_topo, di_topo, astrom)
    # Geocentric apparent (CIRS) RA for the classical hour angle: the
    # atci13 chain, with the date-dependent part (apci13) done once.
    astrom_geo, _eo2 = erfa.apci13(tdb.jd1, tdb.jd2)
    ri_geo, _di_geo = erfa.atciq(rc, dc, 0.0, 0.0, 0.0, 0.0, astrom_geo)
    alt = 90.0 - np.degrees(zob)
    az = np.mod(np.degrees(aob), 360.0)
    ha = np.mod(np.degrees(astrom["eral"] - ri_geo) / 15.0 + 12.0, 24.0) - 12.0
    return alt, az, ha


def alt_az(ra_deg: float, dec_deg: float, tai_unix: float) -> tuple[float, float]:
    """Topocentric altitude and azimuth of an ICRS position, no refraction.

    Refraction is left out on purpose: ELSTART/AMSTART describe geometry,
    and the header service has no reliable pressure/temperature at the
    start of an exposure.  Cost ~1 ms after warm-up.

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


def alt_az_many(ra_deg: Any, dec_deg: Any, tai_unix: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`alt_az` (inputs broadcast together).

    Cost ~1-2 ms for a few hundred positions.

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
    move the apparent RA by an amount that depends on it.  Cost ~1 ms after
    warm-up.

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

    One ERFA pass instead of three (~1.5 ms after warm-up).

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
    alt, az, ha = _observed(ra_deg, dec_deg, tai_unix)
    alt_f = float(alt)
    return ObservedPointing(
        alt_deg=alt_f,
        az_deg=float(az),
        ha_hours=float(ha),
        zenith_distance_deg=zenith_distance(alt_f),
        airmass=airmass(alt_f),
        eop=eop_status(tai_unix),
    )
