"""Default (nominal) TAN WCS of one sensor from the commanded pointing.

Why this module exists
----------------------
A raw header should carry a WCS good to a few arcseconds near the
boresight (tens of arcseconds at the edge of LSSTCam) so that a raw can be
displayed and matched before any astrometric fit.  It follows only from the
boresight, the sky position angle and the nominal sensor layout of
:mod:`header.geometry`; no optical distortion is modelled.

Conventions
-----------
* The boresight (RA, Dec, ICRS) is at the centre of the focal plane,
  focal-plane (0, 0) mm; CRVAL = boresight, CRPIX = the boresight's 1-based
  pixel coordinates in the sensor's assembled detector (DETSEC) frame, so
  CRPIX lies far outside the sensor for all but the central one.
* ROTPA is the position angle, from north through east, of the focal-plane
  +y axis on the sky.
* Parity: for LSSTCam and ComCam, the focal-plane +x axis is at position
  angle ROTPA - 90 deg (at ROTPA = 0: +y north, +x west — the usual "north
  up, east left" orientation); for LATISS the x axis is mirrored (+x at
  ROTPA + 90 deg), following obs_lsst (``wcsFlipX`` is set for LATISS raws
  only).  This is afw's ``makeCdMatrix(scale, orientation=ROTPA, flipX)``.
* The focal-plane layout (sensor positions, :func:`header.geometry.sensor_yaw_deg`,
  0 for science sensors) is obs_lsst's, i.e. of DM's assembled pixel frame.
  The camera's DETSEC frame is that frame mirrored top to bottom
  (``y = y1 + y2 - y_DM`` over the active rows, see :mod:`header.geometry`),
  so at yaw 0 detector +y points along focal-plane -y: CRPIX2 is mirrored
  and the CD matrix's second column changes sign.
* The TAN projection maps the plate scale linearly onto the tangent plane;
  across LSSTCam (r <= ~2 deg) that differs from a linear angle-to-mm
  relation by at most ~3 arcsec, far below the neglected distortion.
"""

from __future__ import annotations

import math

from header.geometry import (
    PIXEL_SIZE_MM,
    center_pixel,
    is_wavefront,
    plate_scale_arcsec,
    sensor_center_mm,
    sensor_yaw_deg,
)

__all__ = ["default_wcs", "parity"]


def parity(camera: str) -> int:
    """+1 if focal-plane +x is at PA ROTPA-90 deg (LSSTCam, ComCam), -1 if mirrored (LATISS).

    Parameters
    ----------
    camera : str
        'LSSTCam', 'ComCam' or 'LATISS'.

    Returns
    -------
    int
    """
    return -1 if str(camera).lower() == "latiss" else 1


def default_wcs(
    ra_deg: float,
    dec_deg: float,
    rotpa_deg: float,
    camera: str,
    raft: str,
    sensor: str,
    vendor: str,
) -> dict[str, object]:
    """Nominal TAN WCS keywords for one sensor.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Boresight, ICRS (deg).
    rotpa_deg : float
        Sky position angle of the focal-plane +y axis, north through east (deg).
    camera : str
        'LSSTCam', 'ComCam' or 'LATISS'.
    raft, sensor : str
        e.g. 'R22', 'S11'.
    vendor : str
        'ITL' or 'E2V' (sets the detector frame and its centre).

    Returns
    -------
    dict
        WCSAXES, CTYPE1/2, CUNIT1/2, CRVAL1/2 (deg), CRPIX1/2 (pixel),
        CD1_1, CD1_2, CD2_1, CD2_2 (deg / pixel), RADESYS, EQUINOX.

    Raises
    ------
    ValueError
        If the pointing is not finite or |Dec| > 90 deg, or the sensor is
        unknown.  A caller with no pointing should write no WCS at all.
    """
    for name, value in (("ra_deg", ra_deg), ("dec_deg", dec_deg), ("rotpa_deg", rotpa_deg)):
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"{name} must be a finite number, not {value!r}")
    if abs(float(dec_deg)) > 90.0:
        raise ValueError(f"dec_deg out of range: {dec_deg!r}")

    scale_deg = plate_scale_arcsec(camera) / 3600.0  # deg / pixel
    cx_mm, cy_mm = sensor_center_mm(raft, sensor, camera)
    yaw = math.radians(sensor_yaw_deg(raft, sensor, camera))
    px0, py0 = center_pixel(vendor, 8 if is_wavefront(sensor) else 16)

    # DM pixel offsets -> focal-plane offsets: rotate by the sensor yaw.
    cy_, sy_ = math.cos(yaw), math.sin(yaw)
    # Boresight (focal plane origin) in DM pixels: p0 + R(-yaw) (-c / pixel size);
    # then into the DETSEC frame, mirrored in y about the active area's centre py0.
    bx, by = -cx_mm / PIXEL_SIZE_MM, -cy_mm / PIXEL_SIZE_MM
    crpix1 = px0 + cy_ * bx + sy_ * by
    crpix2 = py0 - (-sy_ * bx + cy_ * by)

    # Focal-plane axes -> (east, north) intermediate world coordinates.
    th = math.radians(float(rotpa_deg))
    s = parity(camera)
    m11, m12 = -s * math.cos(th), math.sin(th)
    m21, m22 = s * math.sin(th), math.cos(th)
    # CD = scale * M . R(yaw) . diag(1, -1)  (the last factor: DETSEC y runs against DM's)
    cd11 = scale_deg * (m11 * cy_ + m12 * sy_)
    cd12 = -scale_deg * (-m11 * sy_ + m12 * cy_)
    cd21 = scale_deg * (m21 * cy_ + m22 * sy_)
    cd22 = -scale_deg * (-m21 * sy_ + m22 * cy_)

    return {
        "WCSAXES": 2,
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRVAL1": float(ra_deg) % 360.0,
        "CRVAL2": float(dec_deg),
        "CRPIX1": crpix1,
        "CRPIX2": crpix2,
        "CD1_1": cd11,
        "CD1_2": cd12,
        "CD2_1": cd21,
        "CD2_2": cd22,
        "RADESYS": "ICRS",
        "EQUINOX": 2000.0,
    }
