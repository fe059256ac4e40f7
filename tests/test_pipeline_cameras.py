"""End to end, ComCam and LSSTCam: each its own instance under supervisord on a real DDS domain;
every keyword of the camera's map, the HDU layout, ITL and e2v geometry, per-sensor headers."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import fitsio
import pytest
import yaml

from header.geometry import parse_section
from protocols.config import load_instance, load_keyword_map, load_template
from protocols.fastpath import SensorHeaderClient, SensorHeaderError
from tests.conftest import fresh_domain_and_offset, run_sim, see_deployment
from tests.oracle import PlayedNight, expected_value
from tests.plain_dds import PlainReader
from tools.demo import fitsverify
from tools.runner import Deployment
from tools.sim.night import plan_night
from tools.sim.scenario import load_scenario

CSC = {"ComCam": "CCHeaderService", "LSSTCam": "MTHeaderService"}


def scenario(instrument: str) -> dict[str, Any]:
    exp = {"exptime": 2.0, "ra": 40.0, "dec": -35.0, "rotpa": 30.0, "filter": "r_03", "imgtype": "OBJECT"}
    return {
        "instrument": instrument,
        "exposures": [
            {**exp, "start": "2026-11-25T03:04:06.457"},
            {**exp, "start": "2026-11-25T03:04:20.000", "ra": 45.0, "dec": -30.0, "filter": "i_06"},
        ],
    }


@pytest.fixture(scope="module", params=["ComCam", "LSSTCam"])
def night(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlayedNight]:
    instrument = request.param
    base = tmp_path_factory.mktemp(instrument)
    path = base / "night.yaml"
    path.write_text(yaml.safe_dump(scenario(instrument)))
    emissions = plan_night(load_scenario(path))
    images = [e.fields["imageName"] for e in emissions if e.topic == "startIntegration"]
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(base / "run", base / "annex", domain, offset)
    mp = pytest.MonkeyPatch()
    dep.start()
    try:
        dep.start_instance(instrument)
        dep.wait_running(instrument)
        see_deployment(mp, dep)
        cfg = load_instance(instrument)
        reader = PlainReader(domain, CSC[instrument], "logevent_largeFileObjectAvailable")
        time.sleep(1.0)
        sim = run_sim(dep, path, speed=20)
        assert sim.returncode == 0, sim.stderr
        got = reader.wait(lambda g: {s["id"] for s in g} >= set(images), timeout=120)
        yield PlayedNight(dep, cfg, images, emissions, {s["id"]: s for s in got}, base / "annex", instrument)
    finally:
        dep.stop()
        mp.undo()


def path_of(night: PlayedNight, image: str) -> str:
    return str(night.annex / night.announced[image]["url"].split("/", 3)[3])


def test_all_announced_and_fitsverify_clean(night: PlayedNight) -> None:
    assert set(night.announced) == set(night.images)
    for image in night.images:
        errors, warnings, out = fitsverify(path_of(night, image))
        assert (errors, warnings) == (0, 0), out[-3000:]


def test_hdu_layout(night: PlayedNight) -> None:
    with fitsio.FITS(path_of(night, night.images[0])) as f:
        names = [f[i].read_header().get("EXTNAME", "PRIMARY").strip() for i in range(len(f))]
    if night.instrument == "ComCam":
        assert len(names) == 154
        for k, slot in enumerate(["S00", "S01", "S02", "S10", "S11", "S12", "S20", "S21", "S22"]):
            block = names[1 + 17 * k : 18 + 17 * k]
            assert block[0] == f"R22_{slot}"
            assert block[1:] == [f"Segment{s}" for s in "10 11 12 13 14 15 16 17 07 06 05 04 03 02 01 00".split()]
    else:
        assert len(names) == 206
        sensors = names[1:]
        assert len(set(sensors)) == 205
        assert sum(n.split("_")[1].startswith("SG") for n in sensors) == 8
        assert sum(n.split("_")[1].startswith("SW") for n in sensors) == 8


def test_every_keyword_of_the_map(night: PlayedNight) -> None:
    cfg = night.cfg
    kmap = load_keyword_map(cfg)
    sensor_keys = {t.key for t in load_template(cfg, "sensor")}
    image = night.images[0]
    primary = fitsio.read_header(path_of(night, image), 0)
    sensor = fitsio.read_header(path_of(night, image), 1)
    for src in kmap.keywords:
        hdr = sensor if src.keyword in sensor_keys else primary
        assert src.keyword in hdr, f"{src.keyword} missing"
        want = expected_value(night.emissions, src, image, sensor_index=0)
        got = hdr[src.keyword]
        assert want is not None, f"simulator published nothing for {src.keyword}"
        if isinstance(want, float):
            assert isinstance(got, float) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), (src.keyword, got, want)
        elif isinstance(want, (bool, int)):
            assert got == want and type(got) is type(want), (src.keyword, got, want)
        else:
            assert str(got).rstrip() == str(want).rstrip(), (src.keyword, got, want)


def _sensor_headers(night: PlayedNight, image: str) -> dict[str, fitsio.FITSHDR]:
    out = {}
    with fitsio.FITS(path_of(night, image)) as f:
        for i in range(1, len(f)):
            h = f[i].read_header()
            if "CCD_MANU" in h:
                out[h["EXTNAME"].strip()] = h
    return out


def test_itl_and_e2v_geometry(night: PlayedNight) -> None:
    image = night.images[0]
    sensors = _sensor_headers(night, image)
    vendors = {h["CCD_MANU"].strip() for h in sensors.values()}
    assert "ITL" in vendors
    if night.instrument == "LSSTCam":
        assert "E2V" in vendors
    for name, h in sensors.items():
        if h["CCD_MANU"].strip() == "ITL" and "SW" not in name:
            assert h["DETSIZE"] == "[1:4072,1:4000]"
            assert (h["PREH"], h["OVERH"], h["OVERV"]) == (3, 32, 48)
        elif h["CCD_MANU"].strip() == "E2V":
            assert h["DETSIZE"] == "[1:4096,1:4004]"
            assert (h["PREH"], h["OVERH"], h["OVERV"]) == (10, 54, 46)
        # the default WCS is centred on the commanded pointing
        assert math.isclose(h["CRVAL1"], 40.0, abs_tol=1e-9) and math.isclose(h["CRVAL2"], -35.0, abs_tol=1e-9)
    if night.instrument == "ComCam":
        seg = fitsio.read_header(path_of(night, image), 2)
        assert seg["EXTNAME"].strip() == "Segment10" and seg["DATASEC"] == "[4:512,1:2000]"
        # as in the camera's raws (issue 16): lower row, flipped in x only
        assert (seg["DETSEC"], seg["DTV1"], seg["DTV2"], seg["DTM1_1"], seg["DTM2_2"]) == ("[509:1,1:2000]", 513, 0, -1.0, 1.0)


def test_per_sensor_header_on_request(night: PlayedNight) -> None:
    image = night.images[-1]
    cfg = night.cfg
    client = SensorHeaderClient(cfg.endpoints.composer_router)
    sensors = _sensor_headers(night, image)
    e2v = next((n for n, h in sensors.items() if h["CCD_MANU"].strip() == "E2V"), None)
    for name in [n for n in (e2v, next(iter(sensors))) if n]:
        sh = client.get(image, name)
        assert sh.header["OBSID"].strip() == image  # from the primary
        assert sh.header["LSST_NUM"] == sensors[name]["LSST_NUM"]  # from the sensor
        assert sh.header["EXTNAME"].strip() == name
        assert len(sh.segments) == (8 if "_SW" in name else 16)
        vendor = sensors[name]["CCD_MANU"].strip()
        x0, x1, y0, y1 = parse_section(sh.segments[0][1]["DATASEC"])
        assert (x0, y1) == ((11, 2002) if vendor == "E2V" else (4, 2000))
        seg10 = sh.segments[0][1]
        assert (seg10["DETSEC"], seg10["DTV1"], seg10["DTV2"], seg10["DTM1_1"], seg10["DTM2_2"]) == (
            ("[512:1,1:2002]", 523, 0, -1.0, 1.0) if vendor == "E2V" else ("[509:1,1:2000]", 513, 0, -1.0, 1.0)
        )
    with pytest.raises(SensorHeaderError, match="not in this image"):
        client.get(image, "R99_S99")
    with pytest.raises(SensorHeaderError, match="not among"):
        client.get(image.replace("_0000", "_9999"), "R22_S11")
    client.close()
