"""End to end, LATISS: a simulated night on a real DDS domain, and on Kafka (the embedded broker and
registry), through the four processes under supervisord, checked against the simulator's own plan
(values in the header, files, announcements)."""

from __future__ import annotations

import hashlib
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import fitsio
from astropy.time import Time
import pytest
import yaml

from header.astro import tai_iso
from protocols.config import load_instance, load_keyword_map
from tests.conftest import run_sim, see_deployment
from tests.kafka_harness import PlainKafkaReader
from tests.oracle import PlayedNight, expected_value
from tests.plain_dds import PlainReader
from tools.demo import fitsverify
from tools.runner import Deployment
from tools.sim.night import plan_night
from tools.sim.scenario import load_scenario

SCENARIO = {
    "instrument": "LATISS",
    "exposures": [
        {"start": "2026-11-25T03:04:06.457", "exptime": 10.0, "ra": 40.1167, "dec": -40.0301, "rotpa": 183.74,
         "filter": "SDSSr_65mm", "imgtype": "OBJECT", "image_name": "AT_O_20261124_000001"},
        {"start": "2026-11-25T03:04:30.000", "exptime": 5.0, "ra": 20.5, "dec": -60.2, "rotpa": 12.0,
         "filter": "SDSSg_65mm", "imgtype": "OBJECT", "omit": ["ATPtg.currentTargetStatus"]},
        {"start": "2026-11-25T03:04:50.000", "exptime": 4.0, "ra": 60.0, "dec": -20.0, "rotpa": 90.0,
         "filter": "SDSSr_65mm", "imgtype": "ENGTEST"},
        # starts during the previous exposure's readout (startReadout 03:04:54, endReadout 03:04:56)
        {"start": "2026-11-25T03:04:55.000", "exptime": 3.0, "ra": 60.0, "dec": -20.0, "rotpa": 90.0,
         "filter": "SDSSr_65mm", "imgtype": "ENGTEST"},
    ],
}


@pytest.fixture(scope="module", params=["dds", "kafka"])
def night(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[PlayedNight]:
    from tests.conftest import fresh_domain_and_offset

    base = tmp_path_factory.mktemp("latiss")
    scen_path = base / "night.yaml"
    scen_path.write_text(yaml.safe_dump(SCENARIO))
    scenario = load_scenario(scen_path)
    emissions = plan_night(scenario)
    images = [e.fields["imageName"] for e in emissions if e.topic == "startIntegration"]
    domain, offset = fresh_domain_and_offset()
    bus = request.param
    extra = request.getfixturevalue("local_kafka").env(f"latiss{domain}") if bus == "kafka" else {}
    dep = Deployment(base / "run", base / "annex", domain, offset, extra_env=extra, bus=bus)
    mp = pytest.MonkeyPatch()
    dep.start()
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS")
        see_deployment(mp, dep)
        cfg = load_instance("LATISS")
        if bus == "kafka":
            reader: Any = PlainKafkaReader(dep.env, "ATHeaderService", "logevent_largeFileObjectAvailable")
        else:
            reader = PlainReader(domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
        time.sleep(1.0)
        sim = run_sim(dep, scen_path, speed=20)
        assert sim.returncode == 0, sim.stderr
        announced = reader.wait(lambda got: {s["id"] for s in got} >= set(images), timeout=90)
        yield PlayedNight(dep, cfg, images, emissions, {s["id"]: s for s in announced}, base / "annex")
    finally:
        dep.stop()
        mp.undo()


def header_of(night: PlayedNight, image: str, hdu: int = 0) -> fitsio.FITSHDR:
    ann = night.announced[image]
    path = night.annex / ann["url"].split("/", 3)[3]
    return fitsio.read_header(str(path), hdu)


SENSOR_KEYWORDS = {"CCDSLOT", "RAFTBAY", "CCD_MANU", "CCD_TYPE", "CCD_SERN", "LSST_NUM", "SEQCKSUM", "SEQNAME",
                   "REBNAME", "CONTNUM", "CCDTEMP", "OVERH", "OVERV", "PREH"}


def test_every_exposure_announced_with_downloadable_md5(night: PlayedNight) -> None:
    assert set(night.announced) == set(night.images)
    for image, ann in night.announced.items():
        data = urllib.request.urlopen(ann["url"], timeout=10).read()
        assert hashlib.md5(data).hexdigest() == ann["checkSum"]
        assert ann["byteSize"] == len(data)
        assert ann["generator"] == "ATHeaderService"
        assert ann["mimeType"] == "FITS"
        assert ann["url"].startswith("http://127.0.0.1:")
        assert f"/LATISS/" in ann["url"] and ann["url"].endswith(f"/{image}.fits")
        # the archiver's query by imageName over HTTP
        base = ann["url"].split("/LATISS/")[0]
        entry = json.loads(urllib.request.urlopen(f"{base}/index/{image}", timeout=10).read())
        assert entry["md5"] == ann["checkSum"] and entry["version"] == 1 and entry["announced"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/index/AT_O_20261124_999999", timeout=10)
    assert err.value.code == 404


def test_every_keyword_has_the_simulated_value_and_type(night: PlayedNight) -> None:
    kmap = load_keyword_map(night.cfg)
    image = night.images[0]
    primary, sensor = header_of(night, image, 0), header_of(night, image, 1)
    checked = 0
    for src in kmap.keywords:
        hdr = sensor if src.keyword in SENSOR_KEYWORDS else primary
        assert src.keyword in hdr, f"{src.keyword} missing"
        want = expected_value(night.emissions, src, image)
        got = hdr[src.keyword]
        assert want is not None, f"simulator published nothing for {src.keyword}"
        if isinstance(want, float) and not isinstance(want, bool):
            assert isinstance(got, float), f"{src.keyword}: {got!r} is not a float"
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), f"{src.keyword}: {got} != {want}"
        elif isinstance(want, bool):
            assert got == want, src.keyword
        elif isinstance(want, int):
            assert isinstance(got, int) and got == want, f"{src.keyword}: {got!r} != {want!r}"
        else:
            assert str(got).rstrip() == str(want).rstrip(), f"{src.keyword}: {got!r} != {want!r}"
        checked += 1
    assert checked == len(kmap.keywords) >= 80


def test_computed_times_and_status(night: PlayedNight) -> None:
    image = night.images[0]
    h = header_of(night, image)
    assert h["TIMESYS"] == "TAI"
    assert h["DATE-OBS"] == "2026-11-25T03:04:06.457"
    assert h["DAYOBS"] == "20261124"
    assert h["HDRSTAT"] == "COMPLETE"
    assert math.isclose(h["MJD-OBS"], Time("2026-11-25T03:04:06.457", scale="tai").mjd, abs_tol=1e-8)
    # DATE is the UTC time the file was written: after the exposure, and in UTC (no 37 s TAI offset)
    written = Time(h["DATE"], scale="utc")
    assert 0 < (Time.now() - written).sec < 600
    assert 1.0 <= h["AIRMASS"] < 3.0


def test_omitted_topic_is_undefined_not_stale(night: PlayedNight) -> None:
    image = night.images[1]
    h = header_of(night, image)
    for kw in ("HASTART", "AMSTART", "HAEND", "AMEND"):
        assert kw in h
        assert h[kw] is None, f"{kw} should be undefined, got {h[kw]!r}"
    prov_path = night.annex / night.announced[image]["url"].split("/", 3)[3].replace(".fits", ".prov.json")
    prov = json.loads(prov_path.read_text())
    assert "stale" in prov["keywords"]["HASTART"]["undefined"] or "no ATPtg" in prov["keywords"]["HASTART"]["undefined"]
    # the exposures around it still have the values
    assert header_of(night, night.images[0])["HASTART"] is not None
    assert header_of(night, night.images[2])["HASTART"] is not None


def test_start_and_end_collection_points_differ(night: PlayedNight) -> None:
    kmap = load_keyword_map(night.cfg).by_keyword()
    image = night.images[0]
    h = header_of(night, image)
    assert h["ELSTART"] != h["ELEND"] and h["AZSTART"] != h["AZEND"]
    assert math.isclose(h["ELEND"], expected_value(night.emissions, kmap["ELEND"], image), rel_tol=1e-9)
    assert math.isclose(h["ELSTART"], expected_value(night.emissions, kmap["ELSTART"], image), rel_tol=1e-9)


def test_overlapping_exposures_get_their_own_headers(night: PlayedNight) -> None:
    a, b = night.images[2], night.images[3]
    ha, hb = header_of(night, a), header_of(night, b)
    assert ha["OBSID"] == a and hb["OBSID"] == b
    assert ha["DATE-OBS"] == "2026-11-25T03:04:50.000" and hb["DATE-OBS"] == "2026-11-25T03:04:55.000"
    assert ha["EXPTIME"] == 4.0 and hb["EXPTIME"] == 3.0
    assert ha["HDRSTAT"] == hb["HDRSTAT"] == "COMPLETE"


def test_hdu_layout_and_segment_geometry(night: PlayedNight) -> None:
    ann = night.announced[night.images[0]]
    path = night.annex / ann["url"].split("/", 3)[3]
    with fitsio.FITS(str(path)) as f:
        assert len(f) == 18  # primary, sensor, 16 segments
        names = [f[i].read_header()["EXTNAME"].strip() for i in range(1, 18)]
    assert names[0] == "R00_S00"
    assert names[1:] == [f"Segment{n}" for n in ("10 11 12 13 14 15 16 17 07 06 05 04 03 02 01 00".split())]
    seg = fitsio.read_header(str(path), 2)
    assert seg["DATASEC"] == "[4:512,1:2000]"
    assert seg["DETSIZE"] == "[1:4072,1:4000]"


def test_files_are_fitsverify_clean(night: PlayedNight) -> None:
    for i, image in enumerate(night.images):
        ann = night.announced[image]
        path = night.annex / ann["url"].split("/", 3)[3]
        errors, warnings, out = fitsverify(path)
        assert errors == 0, out
        if i != 1:  # exposure 1 has undefined values by design: fitsverify warns about null values
            assert warnings == 0, out
        else:
            assert all("null value" in line for line in out.splitlines() if "*** Warning" in line), out
