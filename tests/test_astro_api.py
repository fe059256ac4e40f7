"""header.astro's public API: small, self-initialising, no astropy.coordinates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from header import _astro_erfa, astro

PUBLIC = {"MAX_TAI_UNIX", "airmass", "alt_az_ha", "dayobs", "mjd_tai", "mjd_utc", "preload", "tai_iso", "usable_time", "utc_iso"}


def test_public_names_are_the_private_implementation() -> None:
    assert set(astro.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(astro, name) is getattr(_astro_erfa, name)  # no wrapper: the fast path as is


def test_first_call_needs_no_warm_up_and_no_astropy_coordinates() -> None:
    code = (
        "import sys\n"
        "from header import astro\n"
        "assert astro.utc_iso(1.8e9 + 37.0) == '2027-01-15T08:00:00.000', astro.utc_iso(1.8e9 + 37.0)\n"
        "assert astro.tai_iso(1.8e9) == '2027-01-15T08:00:00.000'\n"
        "assert astro.dayobs(1.8e9) == '20270114'\n"
        "alt, az, ha = astro.alt_az_ha(10.0, -20.0, 1.8e9)\n"
        "assert -90.0 <= alt <= 90.0 and 0.0 <= az < 360.0 and -12.0 <= ha < 12.0\n"
        "assert 'astropy.coordinates' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
