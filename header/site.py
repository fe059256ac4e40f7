"""The observatory site: Rubin Observatory (Simonyi and Auxiliary telescopes), Cerro Pachón.

The one definition of the site's WGS84 geodetic coordinates; the header computations
(:mod:`header.astro`) and the simulator (:mod:`tools.sim`) both read them from here, so the
simulated sky and the headers computed from it agree by construction. Plain floats: importing this
module costs nothing (no astropy).
"""

from __future__ import annotations

__all__ = ["SITE_LON_DEG", "SITE_LAT_DEG", "SITE_HEIGHT_M", "SITE_GEODETIC"]

SITE_LON_DEG = -70.749417  #: east longitude, degrees (WGS84)
SITE_LAT_DEG = -30.244639  #: latitude, degrees (WGS84)
SITE_HEIGHT_M = 2663.0  #: height above the WGS84 ellipsoid, metres
SITE_GEODETIC = (SITE_LON_DEG, SITE_LAT_DEG, SITE_HEIGHT_M)
