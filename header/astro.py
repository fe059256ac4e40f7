"""Dates and sky positions for Rubin headers: the public API.

Everything takes SAL time, TAI unix seconds (UTC unix time plus TAI-UTC from the leap-second
table). The work is done by :mod:`header._astro_erfa`, which calls ERFA directly on plain floats
for scalar inputs (an LSSTCam header composes in milliseconds because of it) and takes astropy's
``Time`` route for anything unusual; its results are bit-identical to astropy's (tests/test_astro.py
proves it). Importing this module applies the process-wide IERS settings (never download, use the
bundled tables) and does not import ``astropy.coordinates``. No warm-up is required: the tables
load on first use; :func:`preload` only pays that cost up front.

* :func:`tai_iso` DATE-OBS/DATE-BEG/DATE-END (TAI), :func:`utc_iso` DATE (UTC),
  :func:`mjd_tai` MJD-OBS/MJD-BEG/MJD-END, :func:`mjd_utc` MJD, :func:`dayobs` DAYOBS (date of TAI - 12 h).
* :func:`alt_az_ha` topocentric alt/az (no refraction) and hour angle of an ICRS position;
  :func:`airmass` sec(z) or None at or below the horizon.
* :func:`usable_time` a value from outside as TAI unix seconds, or None if it is no such time.
* :func:`preload` load the IERS and leap-second tables now (process start).
"""

from __future__ import annotations

from header._astro_erfa import (
    MAX_TAI_UNIX,
    airmass,
    alt_az_ha,
    dayobs,
    mjd_tai,
    mjd_utc,
    preload,
    tai_iso,
    usable_time,
    utc_iso,
)

__all__ = [
    "MAX_TAI_UNIX",
    "airmass",
    "alt_az_ha",
    "dayobs",
    "mjd_tai",
    "mjd_utc",
    "preload",
    "tai_iso",
    "usable_time",
    "utc_iso",
]
