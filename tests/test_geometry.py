"""Tests for header.geometry and header.wcs.

Numbers asserted literally come from /work/shared/reference/header-facts.md
(LCA-13501); everything else is checked for internal consistency or against
an independent astropy computation.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from header import geometry as geo
from header.wcs import default_wcs

import astropy.units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astropy.wcs import WCS, FITSFixedWarning  # noqa: E402
from astropy.wcs.utils import proj_plane_pixel_scales  # noqa: E402

# header-facts.md, segment geometry table.
FACTS = {
    "ITL": dict(rows=2000, cols=509, det_rows=4000, det_cols=4072, preh=3, overh=32, overv=48),
    "E2V": dict(rows=2002, cols=512, det_rows=4004, det_cols=4096, preh=10, overh=54, overv=46),
}
HDU_ORDER = ["10", "11", "12", "13", "14", "15", "16", "17", "07", "06", "05", "04", "03", "02", "01", "00"]
VENDORS = ("ITL", "E2V")


def apply_dtm(cards: dict, x: float, y: float) -> tuple[float, float]:
    """Detector coordinates of segment pixel (x, y): DTM . (x, y) + DTV."""
    return (
        cards["DTM1_1"] * x + cards["DTM1_2"] * y + cards["DTV1"],
        cards["DTM2_1"] * x + cards["DTM2_2"] * y + cards["DTV2"],
    )


# --------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------
def test_segment_names_hdu_order():
    assert geo.segment_names() == HDU_ORDER
    assert geo.segment_names(16) == HDU_ORDER
    assert geo.segment_names(8) == HDU_ORDER[:8]
    with pytest.raises(ValueError):
        geo.segment_names(4)


@pytest.mark.parametrize("vendor", VENDORS)
def test_vendor_table_matches_facts(vendor):
    v = geo.get_vendor(vendor)
    f = FACTS[vendor]
    assert (v.seg_rows, v.seg_cols) == (f["rows"], f["cols"])
    assert (v.det_rows, v.det_cols) == (f["det_rows"], f["det_cols"])
    assert (v.prescan, v.overscan_cols, v.overscan_rows) == (f["preh"], f["overh"], f["overv"])
    assert geo.get_vendor(vendor.lower()) is v


def test_itl_and_e2v_sections_match_facts():
    for seg in HDU_ORDER:
        itl = geo.segment_cards("ITL", seg)
        assert itl["DATASEC"] == "[4:512,1:2000]"
        assert itl["DETSIZE"] == "[1:4072,1:4000]"
        e2v = geo.segment_cards("E2V", seg)
        assert e2v["DATASEC"] == "[11:522,1:2002]"
        assert e2v["DETSIZE"] == "[1:4096,1:4004]"


@pytest.mark.parametrize("vendor", VENDORS)
def test_extname_channel_naxis(vendor):
    f = FACTS[vendor]
    for i, seg in enumerate(HDU_ORDER):
        c = geo.segment_cards(vendor, seg)
        assert c["EXTNAME"] == f"Segment{seg}"
        assert c["CHANNEL"] == i + 1
        assert c["NAXIS1"] == f["preh"] + f["cols"] + f["overh"]
        assert c["NAXIS2"] == f["rows"] + f["overv"]
        assert isinstance(c["DTV1"], int) and isinstance(c["DTV2"], int)
        for k in ("DTM1_1", "DTM1_2", "DTM2_1", "DTM2_2"):
            assert isinstance(c[k], float)
    assert geo.segment_cards(vendor, "Segment07")["EXTNAME"] == "Segment07"


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("overrides", [(None, None, None), (5, 20, 30), (0, 64, 50)])
def test_dtm_dtv_maps_datasec_corners_onto_detsec(vendor, overrides):
    pre, ocols, orows = overrides
    for seg in HDU_ORDER:
        c = geo.segment_cards(vendor, seg, prescan=pre, overcols=ocols, overrows=orows)
        dx1, dx2, dy1, dy2 = geo.parse_section(c["DATASEC"])
        tx1, tx2, ty1, ty2 = geo.parse_section(c["DETSEC"])
        # The four DATASEC corners land on the matching DETSEC corners.
        for (sx, sy), (ex, ey) in zip(
            [(dx1, dy1), (dx2, dy1), (dx1, dy2), (dx2, dy2)],
            [(tx1, ty1), (tx2, ty1), (tx1, ty2), (tx2, ty2)],
        ):
            assert apply_dtm(c, sx, sy) == (ex, ey)
        # DATASEC lies inside the raw segment image.
        assert 1 <= dx1 <= dx2 <= c["NAXIS1"] and 1 <= dy1 <= dy2 <= c["NAXIS2"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_detsecs_tile_detsize_exactly(vendor):
    dx1, dx2, dy1, dy2 = geo.parse_section(geo.segment_cards(vendor, "00")["DETSIZE"])
    assert (dx1, dy1) == (1, 1)
    cover = np.zeros((dy2, dx2), dtype=np.int16)
    for seg in HDU_ORDER:
        c = geo.segment_cards(vendor, seg)
        x1, x2, y1, y2 = geo.parse_section(c["DETSEC"])
        xa, xb = sorted((x1, x2))
        ya, yb = sorted((y1, y2))
        assert 1 <= xa and xb <= dx2 and 1 <= ya and yb <= dy2
        # Each DETSEC has the size of the active data.
        d = geo.parse_section(c["DATASEC"])
        assert (xb - xa, yb - ya) == (abs(d[1] - d[0]), abs(d[3] - d[2]))
        cover[ya - 1 : yb, xa - 1 : xb] += 1
    assert cover.min() == 1 and cover.max() == 1


def test_layout_convention():
    # Two rows of 8, as in the camera's raws; 1x lower, 0x upper; lower row
    # flipped in x for both vendors, upper row flipped in y for both vendors
    # and in x for ITL only.
    for vendor, f in FACTS.items():
        for j in range(8):
            lo = geo.parse_section(geo.segment_cards(vendor, f"1{j}")["DETSEC"])
            up = geo.parse_section(geo.segment_cards(vendor, f"0{j}")["DETSEC"])
            assert min(up[2:]) == f["rows"] + 1 and max(up[2:]) == f["det_rows"]
            assert min(lo[2:]) == 1 and max(lo[2:]) == f["rows"]
            assert sorted(up[:2]) == sorted(lo[:2]) == [f["cols"] * j + 1, f["cols"] * (j + 1)]
            assert lo[0] > lo[1] and lo[2] < lo[3]
            assert (up[0] > up[1]) == (vendor == "ITL") and up[2] > up[3]


def test_readout_overrides_win():
    c = geo.segment_cards("ITL", "12", prescan=5, overcols=20, overrows=30)
    assert c["DATASEC"] == "[6:514,1:2000]"
    assert (c["NAXIS1"], c["NAXIS2"]) == (5 + 509 + 20, 2000 + 30)
    # Pre-scan moves the data in the segment image, never on the detector.
    assert c["DETSEC"] == geo.segment_cards("ITL", "12")["DETSEC"]


def test_wavefront_segments():
    names = geo.segment_names(8)
    cover = np.zeros((4000, 4072), dtype=np.int16)
    for i, seg in enumerate(names):
        c = geo.segment_cards("ITL", seg, n_segments=8)
        assert c["CHANNEL"] == i + 1
        assert c["DETSIZE"] == "[1:4072,1:4000]"
        x1, x2, y1, y2 = geo.parse_section(c["DETSEC"])
        cover[min(y1, y2) - 1 : max(y1, y2), min(x1, x2) - 1 : max(x1, x2)] += 1
    x1, x2, y1, y2 = geo.active_area("ITL", 8)
    assert cover[y1 - 1 : y2, x1 - 1 : x2].min() == 1
    assert cover.sum() == (x2 - x1 + 1) * (y2 - y1 + 1)
    with pytest.raises(ValueError):
        geo.segment_cards("ITL", "00", n_segments=8)


def test_bad_inputs():
    with pytest.raises(ValueError):
        geo.segment_cards("STA", "10")
    with pytest.raises(ValueError):
        geo.segment_cards("ITL", "18")
    with pytest.raises(ValueError):
        geo.parse_section("4:512,1:2000")


# --------------------------------------------------------------------------
# Sensors and focal plane
# --------------------------------------------------------------------------
def test_lsstcam_sensor_counts_and_order():
    sensors = geo.lsstcam_sensors()
    assert len(sensors) == 205
    assert len(set(sensors)) == 205
    science = [s for s in sensors if s[1].startswith("S") and s[1][1:].isdigit()]
    guiders = [s for s in sensors if s[1] in ("SG0", "SG1")]
    wavefront = [s for s in sensors if s[1] in ("SW0", "SW1")]
    assert (len(science), len(guiders), len(wavefront)) == (189, 8, 8)
    assert sensors[:4] == [("R00", "SG0"), ("R00", "SG1"), ("R00", "SW0"), ("R00", "SW1")]
    assert {r for r, _ in guiders} == {r for r, _ in wavefront} == {"R00", "R04", "R40", "R44"}
    science_rafts = sorted({r for r, _ in science})
    assert len(science_rafts) == 21 and science_rafts[0] == "R01" and science_rafts[-1] == "R43"
    assert sensors[16:25] == [("R01", f"S{a}{b}") for a in range(3) for b in range(3)]


def test_comcam_and_latiss_sensors():
    assert geo.comcam_sensors() == [("R22", f"S{a}{b}") for a in range(3) for b in range(3)]
    assert geo.latiss_sensors() == [("R00", "S00")]
    assert len(geo.camera_sensors("ComCam")) == 9
    assert len(geo.camera_sensors("latiss")) == 1


def test_sensor_centres():
    assert geo.sensor_center_mm("R22", "S11") == (0.0, 0.0)
    assert geo.sensor_center_mm("R00", "S00", camera="LATISS") == (0.0, 0.0)
    for raft, sensor in geo.comcam_sensors():
        assert geo.sensor_center_mm(raft, sensor, "ComCam") == geo.sensor_center_mm(raft, sensor, "LSSTCam")
    # Nominal pitches: 42.25 mm between sensors, 127 mm between rafts.
    assert geo.sensor_center_mm("R22", "S12") == pytest.approx((42.25, 0.0))
    assert geo.sensor_center_mm("R22", "S21") == pytest.approx((0.0, 42.25))
    assert geo.sensor_center_mm("R23", "S11") == pytest.approx((127.0, 0.0))
    assert geo.sensor_center_mm("R32", "S11") == pytest.approx((0.0, 127.0))
    with pytest.raises(ValueError):
        geo.sensor_center_mm("R00", "S11")
    with pytest.raises(ValueError):
        geo.sensor_center_mm("R22", "SG0")


def _footprint(raft, sensor):
    """Axis-aligned focal-plane box (mm) of a sensor's active area."""
    x, y = geo.sensor_center_mm(raft, sensor)
    ax1, ax2, ay1, ay2 = geo.active_area("ITL", 8 if geo.is_wavefront(sensor) else 16)
    w, h = (ax2 - ax1 + 1) * geo.PIXEL_SIZE_MM, (ay2 - ay1 + 1) * geo.PIXEL_SIZE_MM
    if round(geo.sensor_yaw_deg(raft, sensor)) % 180 == 90:
        w, h = h, w
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2


def test_sensors_do_not_overlap_and_corners_sit_in_corner_rafts():
    boxes = {s: _footprint(*s) for s in geo.lsstcam_sensors()}
    for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2):
        overlap_x = min(ba[1], bb[1]) - max(ba[0], bb[0])
        overlap_y = min(ba[3], bb[3]) - max(ba[2], bb[2])
        assert overlap_x <= 1e-9 or overlap_y <= 1e-9, (a, b)
    for raft in ("R00", "R04", "R40", "R44"):
        cx = (int(raft[2]) - 2) * 127.0
        cy = (int(raft[1]) - 2) * 127.0
        for sensor in ("SG0", "SG1", "SW0", "SW1"):
            x, y = geo.sensor_center_mm(raft, sensor)
            assert max(abs(x - cx), abs(y - cy)) < 63.5  # inside its raft
        # Wavefront halves sit on the raft's inner corner (closest to the axis).
        wx, wy = geo.sensor_center_mm(raft, "SW0")
        assert math.hypot(wx, wy) < math.hypot(cx, cy)
        w2x, w2y = geo.sensor_center_mm(raft, "SW1")
        assert math.hypot(wx - w2x, wy - w2y) == pytest.approx(21.125)


def test_plate_scales():
    assert geo.plate_scale_arcsec("LSSTCam") == 0.2
    assert geo.plate_scale_arcsec("ComCam") == 0.2
    assert geo.plate_scale_arcsec("LATISS") == 0.0956
    assert geo.PIXEL_SIZE_MM == 0.010
    assert geo.plate_scale_arcsec_per_mm("LSSTCam") == pytest.approx(20.0)


# --------------------------------------------------------------------------
# WCS
# --------------------------------------------------------------------------
def _astropy_wcs(cards: dict) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(cards)


def _expected_centre(ra, dec, rotpa, camera, raft, sensor) -> SkyCoord:
    """Independent: offset the boresight by the sensor's focal-plane offset.

    +y of the focal plane is at position angle ROTPA (north through east);
    +x is at ROTPA - 90 deg (LSSTCam, ComCam) or ROTPA + 90 deg (LATISS).
    """
    x_mm, y_mm = geo.sensor_center_mm(raft, sensor, camera)
    scale = geo.plate_scale_arcsec(camera) / geo.PIXEL_SIZE_MM  # arcsec / mm
    s = -1.0 if camera == "LATISS" else 1.0
    sep = math.hypot(x_mm, y_mm) * scale * u.arcsec
    pa = (rotpa + math.degrees(math.atan2(-s * x_mm, y_mm))) * u.deg
    return SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(pa, sep)


def _sensor_cases():
    lsst = geo.lsstcam_sensors()
    picks = [lsst[i] for i in range(0, 16)] + [
        ("R22", "S11"), ("R01", "S00"), ("R43", "S22"), ("R10", "S20"), ("R34", "S02"), ("R24", "S12"),
    ]
    cases = [("LSSTCam", r, s, "E2V" if r in ("R10", "R34") else "ITL") for r, s in picks]
    cases += [("ComCam", r, s, "ITL") for r, s in geo.comcam_sensors()[::4]]
    cases += [("LATISS", "R00", "S00", "ITL")]
    return cases


POINTINGS = [
    (0.0, 0.0, 0.0),
    (0.05, -30.0, 37.0),
    (359.95, 10.0, 300.0),
    (180.0, 80.0, 90.0),
    (45.0, -80.0, 200.0),
    (359.999, -85.0, 135.0),
    (123.0, 85.0, -45.0),
]


@pytest.mark.parametrize("camera,raft,sensor,vendor", _sensor_cases())
@pytest.mark.parametrize("ra,dec,rotpa", POINTINGS)
def test_wcs_sensor_centre_on_sky(camera, raft, sensor, vendor, ra, dec, rotpa):
    cards = default_wcs(ra, dec, rotpa, camera, raft, sensor, vendor)
    w = _astropy_wcs(cards)
    px, py = geo.center_pixel(vendor, 8 if geo.is_wavefront(sensor) else 16)
    sky = w.pixel_to_world(px - 1, py - 1)  # astropy pixels are 0-based
    expected = _expected_centre(ra, dec, rotpa, camera, raft, sensor)
    assert sky.separation(expected).to_value(u.arcsec) < 10.0


@given(
    ra=st.floats(min_value=0.0, max_value=360.0, exclude_max=True),
    dec=st.floats(min_value=-88.0, max_value=88.0),
    rotpa=st.floats(min_value=-360.0, max_value=360.0),
    index=st.integers(min_value=0, max_value=204),
)
@settings(max_examples=150, deadline=None)
def test_wcs_random_pointings(ra, dec, rotpa, index):
    raft, sensor = geo.lsstcam_sensors()[index]
    cards = default_wcs(ra, dec, rotpa, "LSSTCam", raft, sensor, "ITL")
    w = _astropy_wcs(cards)
    px, py = geo.center_pixel("ITL", 8 if geo.is_wavefront(sensor) else 16)
    sky = w.pixel_to_world(px - 1, py - 1)
    expected = _expected_centre(ra, dec, rotpa, "LSSTCam", raft, sensor)
    assert sky.separation(expected).to_value(u.arcsec) < 10.0


@pytest.mark.parametrize("camera", geo.CAMERAS)
def test_wcs_scale_orientation_and_keywords(camera):
    raft, sensor = geo.camera_sensors(camera)[0 if camera == "LATISS" else -1]
    ra, dec, rotpa = 150.0, -20.0, 30.0
    cards = default_wcs(ra, dec, rotpa, camera, raft, sensor, "ITL")
    assert cards["CTYPE1"] == "RA---TAN" and cards["CTYPE2"] == "DEC--TAN"
    assert cards["CUNIT1"] == cards["CUNIT2"] == "deg"
    assert cards["RADESYS"] == "ICRS" and cards["EQUINOX"] == 2000.0 and cards["WCSAXES"] == 2
    assert (cards["CRVAL1"], cards["CRVAL2"]) == (ra, dec)
    w = _astropy_wcs(cards)
    scales = proj_plane_pixel_scales(w) * 3600.0
    assert scales == pytest.approx([geo.plate_scale_arcsec(camera)] * 2, rel=1e-9)
    # Parity: the focal plane is standard (east left with north up) except for
    # LATISS; the DETSEC frame is mirrored in y against it, which flips it again.
    det = cards["CD1_1"] * cards["CD2_2"] - cards["CD1_2"] * cards["CD2_1"]
    assert (det < 0) == (camera == "LATISS")
    # Science sensors are not rotated: at the boresight (CRPIX), detector +y
    # points along focal-plane -y, at PA = ROTPA + 180 deg, and detector +x at
    # ROTPA -/+ 90 deg.
    x0, y0 = cards["CRPIX1"] - 1, cards["CRPIX2"] - 1  # astropy pixels are 0-based
    a = w.pixel_to_world(x0, y0)
    assert a.separation(SkyCoord(ra * u.deg, dec * u.deg)).to_value(u.arcsec) < 1e-6
    pa_y = a.position_angle(w.pixel_to_world(x0, y0 + 100)).to_value(u.deg)
    pa_x = a.position_angle(w.pixel_to_world(x0 + 100, y0)).to_value(u.deg)
    s = -1 if camera == "LATISS" else 1
    assert (pa_y - (rotpa + 180) + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-6)
    assert (pa_x - (rotpa - 90 * s) + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("raft,sensor", geo.lsstcam_sensors()[:16] + [("R31", "S20")])
def test_wcs_off_centre_pixels_follow_sensor_yaw(raft, sensor):
    # An off-centre pixel lands where the sensor's yaw puts it in the focal
    # plane: fp = centre + R(yaw) (p_DM - p0) * pixel size, with DM's pixel
    # offset (dx, -dy) for a DETSEC offset (dx, dy); then offset the boresight
    # independently as in _expected_centre.
    ra, dec, rotpa = 210.0, -35.0, 75.0
    cards = default_wcs(ra, dec, rotpa, "LSSTCam", raft, sensor, "ITL")
    w = _astropy_wcs(cards)
    px0, py0 = geo.center_pixel("ITL", 8 if geo.is_wavefront(sensor) else 16)
    cx, cy = geo.sensor_center_mm(raft, sensor)
    yaw = math.radians(geo.sensor_yaw_deg(raft, sensor))
    for dx, dy in ((1500.0, 0.0), (0.0, 900.0), (-1800.0, -900.0)):
        fx = cx + (math.cos(yaw) * dx + math.sin(yaw) * dy) * geo.PIXEL_SIZE_MM
        fy = cy + (math.sin(yaw) * dx - math.cos(yaw) * dy) * geo.PIXEL_SIZE_MM
        sep = math.hypot(fx, fy) * 20.0 * u.arcsec  # 0.2"/pix at 10 um
        pa = (rotpa + math.degrees(math.atan2(-fx, fy))) * u.deg
        expected = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(pa, sep)
        sky = w.pixel_to_world(px0 + dx - 1, py0 + dy - 1)
        assert sky.separation(expected).to_value(u.arcsec) < 10.0


def test_wcs_crpix_of_centre_sensor_is_its_centre():
    cards = default_wcs(10.0, -45.0, 0.0, "LSSTCam", "R22", "S11", "E2V")
    assert (cards["CRPIX1"], cards["CRPIX2"]) == pytest.approx(geo.center_pixel("E2V"))
    cards = default_wcs(10.0, -45.0, 0.0, "LATISS", "R00", "S00", "ITL")
    assert (cards["CRPIX1"], cards["CRPIX2"]) == pytest.approx((2036.5, 2000.5))


def test_wcs_rejects_missing_pointing():
    with pytest.raises(ValueError):
        default_wcs(float("nan"), 0.0, 0.0, "LSSTCam", "R22", "S11", "ITL")
    with pytest.raises(ValueError):
        default_wcs(0.0, 91.0, 0.0, "LSSTCam", "R22", "S11", "ITL")
