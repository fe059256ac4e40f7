"""Segment layout (DATASEC, DETSEC, DTV, DTM, HDU order) against the camera's raw files and
obs_lsst's camera description.

Facts, as test data:

* ``REAL_SEGMENT10``: the first segment HDU of real raws, primary merged with it as DM's ingest
  reads them (obs_lsst ``tests/headers``): ITL from LATISS AT_O_20240624_000106, ComCam
  CC_O_20241108_000266 R22_S00 and LSSTCam MC_O_20250415_000228 R10_S20, MC_O_20250422_000250,
  MC_O_20250609_000578, MC_O_20260315_000051 R01_S01; e2v from LSSTCam MC_C_20231125_000600 R12_S10
  and UCD TS_C_20231031_000227 R21_S01.  All agree.
* ``REAL_SEGMENTS``: all 16 segment HDUs, in file order, of the real raws in obs_lsst's test data
  (ITL: UCD 3023073000237 R22_S01 of 2023-07-30, identical in ComCam 3019053000001 of 2019 and
  CC_S_20240404_000780 of 2024; e2v: UCD 2023103100227 R21_S01 of 2023-10-31, identical in
  LSSTCam 30211212000310 R22_S22 of 2021).
* ``OBS_LSST_AMPS``: obs_lsst's camera description (``policy/cameraHeader.yaml``, CCD_ITL and
  CCD_E2V): each amplifier's position ixy in DM's assembled frame and its flipXY.  DM's frame runs
  in y against the raws' DETSEC frame (DM-36115): y_DM = rows of DETSIZE + 1 - y.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from astropy.io import fits
from astropy.wcs import WCS

from header import geometry as geo
from header.compose import ExposureInputs, Templates, compose_header
from header.wcs import default_wcs
from protocols.config import load_instance, load_keyword_map, load_template
from protocols.envelope import Sender, decode, split_identity
from protocols.fastpath import SensorHeaderClient
from tools.sim.night import focal_plane

CARDS = ("EXTNAME", "DATASEC", "DETSEC", "DETSIZE", "DTV1", "DTV2", "DTM1_1", "DTM1_2", "DTM2_1", "DTM2_2")

REAL_SEGMENT10 = {
    "ITL": {"EXTNAME": "Segment10", "DATASEC": "[4:512,1:2000]", "DETSEC": "[509:1,1:2000]", "DETSIZE": "[1:4072,1:4000]",
            "DTV1": 513, "DTV2": 0, "DTM1_1": -1.0, "DTM1_2": 0.0, "DTM2_1": 0.0, "DTM2_2": 1.0},
    "E2V": {"EXTNAME": "Segment10", "DATASEC": "[11:522,1:2002]", "DETSEC": "[512:1,1:2002]", "DETSIZE": "[1:4096,1:4004]",
            "DTV1": 523, "DTV2": 0, "DTM1_1": -1.0, "DTM1_2": 0.0, "DTM2_1": 0.0, "DTM2_2": 1.0},
}

# EXTNAME  DETSEC  DTV1  DTV2  DTM1_1  DTM2_2, in HDU order (DATASEC, DETSIZE as in REAL_SEGMENT10;
# DTM1_2 = DTM2_1 = 0).
REAL_SEGMENTS = {
    "ITL": """
        Segment10 [509:1,1:2000]        513    0 -1  1
        Segment11 [1018:510,1:2000]    1022    0 -1  1
        Segment12 [1527:1019,1:2000]   1531    0 -1  1
        Segment13 [2036:1528,1:2000]   2040    0 -1  1
        Segment14 [2545:2037,1:2000]   2549    0 -1  1
        Segment15 [3054:2546,1:2000]   3058    0 -1  1
        Segment16 [3563:3055,1:2000]   3567    0 -1  1
        Segment17 [4072:3564,1:2000]   4076    0 -1  1
        Segment07 [4072:3564,4000:2001] 4076 4001 -1 -1
        Segment06 [3563:3055,4000:2001] 3567 4001 -1 -1
        Segment05 [3054:2546,4000:2001] 3058 4001 -1 -1
        Segment04 [2545:2037,4000:2001] 2549 4001 -1 -1
        Segment03 [2036:1528,4000:2001] 2040 4001 -1 -1
        Segment02 [1527:1019,4000:2001] 1531 4001 -1 -1
        Segment01 [1018:510,4000:2001]  1022 4001 -1 -1
        Segment00 [509:1,4000:2001]      513 4001 -1 -1
    """,
    "E2V": """
        Segment10 [512:1,1:2002]        523    0 -1  1
        Segment11 [1024:513,1:2002]    1035    0 -1  1
        Segment12 [1536:1025,1:2002]   1547    0 -1  1
        Segment13 [2048:1537,1:2002]   2059    0 -1  1
        Segment14 [2560:2049,1:2002]   2571    0 -1  1
        Segment15 [3072:2561,1:2002]   3083    0 -1  1
        Segment16 [3584:3073,1:2002]   3595    0 -1  1
        Segment17 [4096:3585,1:2002]   4107    0 -1  1
        Segment07 [3585:4096,4004:2003] 3574 4005  1 -1
        Segment06 [3073:3584,4004:2003] 3062 4005  1 -1
        Segment05 [2561:3072,4004:2003] 2550 4005  1 -1
        Segment04 [2049:2560,4004:2003] 2038 4005  1 -1
        Segment03 [1537:2048,4004:2003] 1526 4005  1 -1
        Segment02 [1025:1536,4004:2003] 1014 4005  1 -1
        Segment01 [513:1024,4004:2003]   502 4005  1 -1
        Segment00 [1:512,4004:2003]      -10 4005  1 -1
    """,
}

# amplifier -> (ixy, flipXY) in DM's frame; C1j: ixy [j, 1], C0j: ixy [j, 0]
OBS_LSST_AMPS = {
    vendor: {
        **{f"1{j}": ((j, 1), (True, True)) for j in range(8)},
        **{f"0{j}": ((j, 0), lower_flip) for j in range(8)},
    }
    for vendor, lower_flip in (("ITL", (True, False)), ("E2V", (False, False)))
}
VENDORS = ("ITL", "E2V")
T0 = 1.8e9  # TAI s of the composed exposures
POINTING = (30.0, -30.0, 0.0)  # RA, Dec, ROTPA (deg): focal-plane +y north, +x west


def real_segments(vendor: str) -> list[dict[str, Any]]:
    rows = []
    for line in REAL_SEGMENTS[vendor].split("\n"):
        if not line.strip():
            continue
        name, detsec, dtv1, dtv2, m11, m22 = line.split()
        rows.append({**REAL_SEGMENT10[vendor], "EXTNAME": name, "DETSEC": detsec, "DTV1": int(dtv1), "DTV2": int(dtv2),
                     "DTM1_1": float(m11), "DTM2_2": float(m22)})
    return rows


def geometry_of(header: Any) -> dict[str, Any]:
    return {k: (header[k].strip() if isinstance(header[k], str) else header[k]) for k in CARDS}


# --------------------------------------------------------------------------------------------
# The values of the real files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_segment10_is_the_real_first_segment(vendor: str) -> None:
    cards = geo.segment_cards(vendor, geo.segment_names()[0])
    assert {k: cards[k] for k in CARDS} == REAL_SEGMENT10[vendor]


@pytest.mark.parametrize("vendor", VENDORS)
def test_all_sixteen_segments_and_their_order_are_the_real_ones(vendor: str) -> None:
    ours = [{k: geo.segment_cards(vendor, s)[k] for k in CARDS} for s in geo.segment_names()]
    assert ours == real_segments(vendor)
    assert [geo.segment_cards(vendor, s)["CHANNEL"] for s in geo.segment_names()] == list(range(1, 17))


# --------------------------------------------------------------------------------------------
# A synthetic sensor assembled with our DETSEC/DTV/DTM only
# --------------------------------------------------------------------------------------------


def segment_image(cards: dict[str, Any], tag: int) -> np.ndarray:
    """A raw segment image: overscan -1, every data pixel distinct (tag * 10^8 + 10^4 y + x)."""
    img = np.full((cards["NAXIS2"], cards["NAXIS1"]), -1, dtype=np.int64)
    x1, x2, y1, y2 = geo.parse_section(cards["DATASEC"])
    y, x = np.mgrid[y1 : y2 + 1, x1 : x2 + 1]
    img[y1 - 1 : y2, x1 - 1 : x2] = tag * 10**8 + 10**4 * y + x
    return img


def assemble_with_dtm(vendor: str, n_segments: int = 16) -> np.ndarray:
    """Detector image [y, x] (0-based) built by mapping every DATASEC pixel through DTM . p + DTV."""
    first = geo.segment_cards(vendor, geo.segment_names(n_segments)[0], n_segments=n_segments)
    _, nx, _, ny = geo.parse_section(first["DETSIZE"])
    det = np.zeros((ny, nx), dtype=np.int64)
    hits = np.zeros((ny, nx), dtype=np.int16)
    for tag, seg in enumerate(geo.segment_names(n_segments), start=1):
        c = geo.segment_cards(vendor, seg, n_segments=n_segments)
        img = segment_image(c, tag)
        x1, x2, y1, y2 = geo.parse_section(c["DATASEC"])
        y, x = np.mgrid[y1 : y2 + 1, x1 : x2 + 1]
        xd = (c["DTM1_1"] * x + c["DTM1_2"] * y + c["DTV1"]).astype(int)
        yd = (c["DTM2_1"] * x + c["DTM2_2"] * y + c["DTV2"]).astype(int)
        det[yd - 1, xd - 1] = img[y - 1, x - 1]
        np.add.at(hits, (yd - 1, xd - 1), 1)
    assert hits.max() <= 1, "two segment pixels on one detector pixel"
    return det if n_segments == 16 else det[: (hits.sum(axis=1) > 0).sum()]


def assemble_like_obs_lsst(vendor: str) -> np.ndarray:
    """The same segments assembled as obs_lsst's camera description says, in DM's frame."""
    v = geo.get_vendor(vendor)
    det = np.zeros((v.det_rows, v.det_cols), dtype=np.int64)
    for tag, seg in enumerate(geo.segment_names(), start=1):
        c = geo.segment_cards(vendor, seg)
        x1, x2, y1, y2 = geo.parse_section(c["DATASEC"])
        data = segment_image(c, tag)[y1 - 1 : y2, x1 - 1 : x2]
        (ix, iy), (flip_x, flip_y) = OBS_LSST_AMPS[vendor][seg]
        if flip_x:
            data = data[:, ::-1]
        if flip_y:
            data = data[::-1, :]
        det[iy * v.seg_rows : (iy + 1) * v.seg_rows, ix * v.seg_cols : (ix + 1) * v.seg_cols] = data
    return det


@pytest.mark.parametrize("vendor", VENDORS)
def test_sensor_assembled_from_our_cards_is_the_camera_description(vendor: str) -> None:
    ours = assemble_with_dtm(vendor)
    assert (ours > 0).all(), "a detector pixel no segment covers"
    # DETSEC frame = DM's frame mirrored top to bottom; then every pixel of every segment is where
    # obs_lsst puts it (block and flips).
    assert np.array_equal(ours[::-1, :], assemble_like_obs_lsst(vendor))
    # Spot check in words: Segment10 (tag 1) fills the lower left block, its first pixel read
    # (DATASEC's first column and row) at the block's lower right corner; Segment00 (tag 16) the
    # upper left block.
    v = geo.get_vendor(vendor)
    lower_left = ours[: v.seg_rows, : v.seg_cols] // 10**8
    upper_left = ours[v.seg_rows :, : v.seg_cols] // 10**8
    assert (lower_left == 1).all() and (upper_left == 16).all()
    x1, _, y1, _ = geo.parse_section(geo.segment_cards(vendor, "10")["DATASEC"])
    assert ours[0, v.seg_cols - 1] == 1 * 10**8 + 10**4 * y1 + x1


def test_wavefront_half_assembles_like_the_lower_half_of_a_full_itl_sensor() -> None:
    # Not from a real SW raw (none is public): the 8 segments of a wavefront half carry the cards
    # their names have on a full ITL sensor, so they tile its lower half exactly.
    half = assemble_with_dtm("ITL", n_segments=8)
    full = assemble_with_dtm("ITL")
    v = geo.get_vendor("ITL")
    assert half.shape == (v.seg_rows, v.det_cols) and (half > 0).all()
    assert np.array_equal(half, full[: v.seg_rows])
    x1, x2, y1, y2 = geo.active_area("ITL", 8)
    assert (x1, x2, y1, y2) == (1, v.det_cols, 1, v.seg_rows)


# --------------------------------------------------------------------------------------------
# The default WCS follows the same frame
# --------------------------------------------------------------------------------------------


def assert_segments_on_sky_where_obs_lsst_puts_them(
    wcs_cards: Any, segments: list[Any], vendor: str, camera: str = "LSSTCam"
) -> None:
    """A science sensor at ROTPA 0 (focal-plane +y north, +x west; east for LATISS, whose x axis is
    mirrored): obs_lsst puts C1j in the upper half of the sensor (north), C0j in the lower half,
    and block j at focal-plane x < 0 for j < 4."""
    w = WCS({k: wcs_cards[k] for k in ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1",
                                        "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")})
    cx, cy = geo.center_pixel(vendor)
    centre = w.pixel_to_world(cx - 1, cy - 1)
    for seg in segments:
        x1, x2, y1, y2 = geo.parse_section(seg["DETSEC"])
        sky = w.pixel_to_world(0.5 * (x1 + x2) - 1, 0.5 * (y1 + y2) - 1)
        (ix, iy), _ = OBS_LSST_AMPS[vendor][seg["EXTNAME"].strip()[-2:]]
        north = (sky.dec - centre.dec).deg
        east = ((sky.ra - centre.ra).wrap_at("180d")).deg
        assert (north > 0) == (iy == 1), seg["EXTNAME"]
        assert (east > 0) == ((ix < 4) != (camera == "LATISS")), seg["EXTNAME"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_wcs_puts_each_segment_where_obs_lsst_puts_its_amplifier(vendor: str) -> None:
    cards = default_wcs(*POINTING, "LSSTCam", "R22", "S11", vendor)
    segments = [geo.segment_cards(vendor, s) for s in geo.segment_names()]
    assert_segments_on_sky_where_obs_lsst_puts_them(cards, segments, vendor)


# --------------------------------------------------------------------------------------------
# Composed headers, read as DM's ingest reads them
# --------------------------------------------------------------------------------------------


def _sample(component: str, topic: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"component": component, "topic": topic, "salIndex": 0, "sndStamp": T0, "data": data}


def _inputs(instrument: str, image: str) -> ExposureInputs:
    """The camera's sensor list and vendors, and a pointing; nothing else."""
    cfg = load_instance(instrument)
    sensors = focal_plane(instrument)
    fp = {"data": {"ccdLocation": ":".join(s.location for s in sensors),
                   "ccdManufacturer": ":".join(s.manufacturer for s in sensors)}}
    start: dict[str, Any] = {f"{cfg.camera}.focalPlaneSummaryInfo:0": fp}
    ra, dec, rotpa = POINTING
    for src in load_keyword_map(cfg).keywords:
        if src.keyword in ("RA", "DEC", "ROTPA"):
            value = {"RA": ra, "DEC": dec, "ROTPA": rotpa}[src.keyword] / (src.scale or 1.0)
            smp = start.setdefault(src.topic_key, _sample(src.component, src.topic, {}))
            smp["data"][src.field] = [value] * 10 if src.kind == "time_series" else value
    return ExposureInputs(image, {}, {"start": T0}, {"start": start})


def _compose(instrument: str, image: str) -> Any:
    cfg = load_instance(instrument)
    templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
    return compose_header(cfg, load_keyword_map(cfg), templates, _inputs(instrument, image), T0 + 10.0)


def merged(primary: Any, extension: Any) -> dict[str, Any]:
    """DM's ingest view: the primary overlaid with one extension (the extension's value wins)."""
    out = {k: primary[k] for k in primary.keys() if k not in ("", "COMMENT", "HISTORY")}
    out.update({k: extension[k] for k in extension.keys() if k not in ("", "COMMENT", "HISTORY")})
    return out


@pytest.mark.parametrize("instrument,image", [("LATISS", "AT_O_20261124_000001"), ("ComCam", "CC_O_20261124_000001")])
def test_first_segment_of_the_written_file(instrument: str, image: str, tmp_path: Path) -> None:
    path = tmp_path / f"{image}.fits"
    path.write_bytes(_compose(instrument, image).file_bytes())
    with fits.open(path) as f:
        segments = [h for h in f[1:] if str(h.header.get("EXTNAME", "")).startswith("Segment")]
        assert [h.header["EXTNAME"] for h in segments[:16]] == [f"Segment{s}" for s in geo.segment_names()]
        dm = merged(f[0].header, segments[0].header)
        assert geometry_of(dm) == REAL_SEGMENT10["ITL"]
        assert [geometry_of(h.header) for h in segments[:16]] == real_segments("ITL")
        # the sensor HDU before them carries the default WCS of the same DETSEC frame
        sensor = f[1].header
        assert sensor["EXTNAME"] == focal_plane(instrument)[0].location
        assert_segments_on_sky_where_obs_lsst_puts_them(sensor, [h.header for h in segments[:16]], "ITL", instrument)


@pytest.fixture
def router() -> Any:
    """A ROUTER socket on loopback answering sensor requests the way the composer does."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close()


def test_lsstcam_sensor_headers_through_the_fast_path(router: Any) -> None:
    """LSSTCam's segment headers travel on the composer's ROUTER socket: an ITL science, an e2v
    science, a guider and a wavefront sensor, each merged header overlaid with its first segment."""
    sock, endpoint = router
    image = "MC_O_20261124_000001"
    header = _compose("LSSTCam", image)
    reply = Sender("composer-reply.LSSTCam@test:1:0.000")
    asked = ["R01_S01", "R12_S10", "R00_SG0", "R44_SW0"]

    def serve() -> None:
        for _ in asked:
            if not sock.poll(10_000):
                return
            ident, rest = split_identity(sock.recv_multipart())
            req = decode(rest).payload
            body = header.context.sensor_header(req["sensor"]) | {"imageName": image, "version": 1}
            sock.send_multipart(ident + reply.frames("hdr.LSSTCam.sensor", body))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = SensorHeaderClient(endpoint, timeout_s=10.0)
    try:
        for location in asked:
            sh = client.get(image, location)
            vendor = sh.header["CCD_MANU"].strip()
            assert vendor == ("E2V" if location == "R12_S10" else "ITL")
            names = [n.split("/")[-1] for n, _ in sh.segments]
            assert names == [f"Segment{s}" for s in geo.segment_names(8 if "_SW" in location else 16)]
            assert geometry_of(merged(sh.header, sh.segments[0][1])) == REAL_SEGMENT10[vendor]
            if "_SW" not in location:
                assert [geometry_of(h) for _, h in sh.segments] == real_segments(vendor)
            if location in ("R01_S01", "R12_S10"):  # science sensors, not rotated
                assert_segments_on_sky_where_obs_lsst_puts_them(sh.header, [h for _, h in sh.segments], vendor)
    finally:
        client.close()
        server.join(timeout=10)
