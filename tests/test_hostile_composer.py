"""Hostile camera events and telemetry: no crash, no poisoned clock, no silent case.

- NaN or infinite values (a time series' time origin, exposureTime, timeout) make the keyword
  undefined with the reason; a composition that fails anyway gives that exposure an INCOMPLETE
  header, never a dead composer.
- A camera event stamped decades ahead does not move the composer's deadline clock.
- Keywords whose type FITS fixes (OBJECT...) are never written blank: fitsverify finds no error.
- An endOfImageTelemetry of an image never started, and a second exposure under a used imageName,
  get no header and are reported with the reason (ctl.skipped, log, hs-catchup list).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import pytest
import zmq

from header.compose import ExposureInputs, Templates, compose_header
from header.keywords import reduce_keyword
from procs import composer as composer_mod
from procs.common import Counters
from procs.composer import Composer, bounded_event_time, collection_points, exposure_timeout
from protocols.config import InstanceConfig, load_instance, load_keyword_map, load_template
from protocols.envelope import decode, tai_now
from tests.live_latiss import ask, frames
from tests.test_bad_input_deployment import INF, NAN, SND, _camera, _latest, _make_player
from tools.catchup import not_composed
from tools.runner import Deployment

T0 = 1.7965e9
NAME = "AT_O_20261124_000001"


@pytest.fixture(scope="module")
def latiss() -> tuple[Any, Any, Templates]:
    cfg = load_instance("LATISS")
    return cfg, load_keyword_map(cfg), Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))


def fitsverify(data: bytes, tmp: Path) -> tuple[int, str]:
    path = tmp / "h.fits"
    path.write_bytes(data)
    p = subprocess.run(["fitsverify", str(path)], capture_output=True, text=True)
    m = re.search(r"(\d+) warning\(s\) and (\d+) error\(s\)", p.stdout)
    assert m, p.stdout
    return int(m.group(2)), p.stdout + p.stderr


def camera_event(topic: str, t: float, **data: Any) -> dict[str, Any]:
    return {"component": "ATCamera", "topic": topic, "salIndex": 0, "sndStamp": t, "rcvStamp": t,
            "data": {"imageName": NAME, **data}}


def card(header: Any, key: str) -> str:
    return next(c for c in header.hdus[0] if c.startswith(f"{key:<8}="))


# -- NaN and infinity (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [NAN, INF, -1e308], ids=["nan", "inf", "huge"])
def test_time_series_without_usable_time_origin_is_undefined(latiss: Any, origin: float) -> None:
    _, kmap, _ = latiss
    src = next(s for s in kmap.keywords if s.keyword == "ROTPA")
    sample = {"component": "ATPtg", "topic": "mountPositions", "salIndex": 0, "sndStamp": T0,
              "data": {"cRioTimestamp": origin, "skyAngle": [10.0] * 100}}
    r = reduce_keyword(src, sample, T0, [], 10.0)
    assert not r.defined and r.reason.startswith("time series has no usable time origin")


def test_infinite_exposure_time_and_timeout(latiss: Any, tmp_path: Path) -> None:
    cfg, kmap, templates = latiss
    start = camera_event("startIntegration", T0, exposureTime=INF, timeout=INF, timestampAcquisitionStart=T0)
    events = {"startIntegration": start, "startReadout": camera_event("startReadout", T0 + 2.0)}
    points = collection_points({"startIntegration": start})
    assert points == {"start": T0, "readout": T0, "end": T0}  # the infinite exposure time is not believed
    assert exposure_timeout(start["data"]) == 30.0 and exposure_timeout({"timeout": NAN, "exposureTime": 5.0}) == 35.0
    h = compose_header(cfg, kmap, templates, ExposureInputs(NAME, events, collection_points(events), {}), T0 + 5, 1)
    assert h.provenance["keywords"]["EXPTIME"]["undefined"] == "value is infinite"
    errors, out = fitsverify(h.file_bytes(), tmp_path)
    assert errors == 0, out


def test_absurd_times_are_undefined_not_errors(latiss: Any, tmp_path: Path) -> None:
    cfg, kmap, templates = latiss
    start = camera_event("startIntegration", T0, exposureTime=2.0, timestampAcquisitionStart=1e20)
    end = camera_event("endOfImageTelemetry", T0 + 3, timestampDateObs=1e20, timestampDateEnd=-5.0)
    events = {"startIntegration": start, "endOfImageTelemetry": end}
    h = compose_header(cfg, kmap, templates, ExposureInputs(NAME, events, collection_points(events), {}), T0 + 5, 1)
    assert h.provenance["undefined"]["DATE-OBS"] == "left out: timestampDateObs is not a timestamp: 1e+20"
    assert h.provenance["undefined"]["DATE-END"] == "left out: timestampDateEnd is not a timestamp: -5.0"
    assert float(card(h, "MJD-OBS")[10:30]) == pytest.approx(61379.824, abs=1e-3)  # from the event's own time
    errors, out = fitsverify(h.file_bytes(), tmp_path)
    assert errors == 0, out


def composer_shell(cfg: Any, kmap: Any, templates: Templates) -> Composer:
    """The composer's composition step alone, without its sockets."""
    shell = Composer.__new__(Composer)
    shell.cfg, shell.kmap, shell.templates, shell.counts = cfg, kmap, templates, Counters()
    return shell


def test_failed_composition_gives_that_exposure_an_incomplete_header(latiss: Any, monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    cfg, kmap, templates = latiss
    t0 = T0 + 1000.0  # reductions are memoized by sample time: a time of its own
    real = composer_mod.compose_header

    def fails_with_telemetry(cfg, kmap, templates, inputs, now, version=1):  # noqa: ANN001, ANN202
        if inputs.snapshots:
            raise RuntimeError("boom")
        return real(cfg, kmap, templates, inputs, now, version)

    monkeypatch.setattr(composer_mod, "compose_header", fails_with_telemetry)
    start = camera_event("startIntegration", t0, exposureTime=2.0, imageDate="20261124")
    events = {"startIntegration": start, "endOfImageTelemetry": camera_event("endOfImageTelemetry", t0 + 3)}
    inputs = ExposureInputs(NAME, events, collection_points(events), {"start": {"x": {}}})
    h = composer_shell(cfg, kmap, templates).compose(inputs, 1)
    assert not h.complete and "'INCOMPLETE'" in card(h, "HDRSTAT")
    assert "composition failed (RuntimeError: boom): header written from the camera events alone" in h.provenance["reasons"][0]
    assert h.image_name == NAME and h.dayobs == "20261124"
    errors, out = fitsverify(h.file_bytes(), tmp_path)
    assert errors == 0, out


# -- event times (pure) -----------------------------------------------------------------------------


def test_event_times_far_from_their_reception_are_not_believed() -> None:
    now = tai_now()
    assert bounded_event_time({"sndStamp": now - 1.0, "rcvStamp": now}, now) == (now - 1.0, None)
    assert bounded_event_time({"sndStamp": now - 8 * 86400.0, "rcvStamp": now}, now)[1] is None  # a replayed night
    t, note = bounded_event_time({"sndStamp": 3e9, "rcvStamp": now}, now)
    assert t == now and "after its reception" in note
    t, note = bounded_event_time({"sndStamp": 1.0, "rcvStamp": None}, now)
    assert t == now and "before its reception" in note
    t, note = bounded_event_time({"sndStamp": NAN, "rcvStamp": now - 2.0}, now)
    assert t == now - 2.0 and "is not a time" in note


# -- fitsverify-typed keywords (pure) ---------------------------------------------------------------


def test_undefined_object_is_a_valid_empty_string(latiss: Any, tmp_path: Path) -> None:
    cfg, kmap, templates = latiss
    events = {"startIntegration": camera_event("startIntegration", T0, exposureTime=0.0)}
    inputs = ExposureInputs(NAME, events, collection_points(events), {}, overrides={
        "OBSERVER": {"value": 5, "comment": "wrong type"}, "DATE-AVG": {"value": "yesterday"}})
    h = compose_header(cfg, kmap, templates, inputs, T0 + 5, 1)
    assert card(h, "OBJECT").startswith("OBJECT  = '        '") and "[undefined: no ATPtg.currentTarget sample" in card(h, "OBJECT")
    assert card(h, "OBSERVER").startswith("OBSERVER= '        '") and "OBSERVER must be a string" in card(h, "OBSERVER")
    assert not any(c.startswith("DATE-AVG") for c in h.hdus[0])
    assert h.provenance["undefined"]["OBJECT"].startswith("no ATPtg.currentTarget sample")
    assert h.provenance["undefined"]["DATE-AVG"].startswith("left out: 'yesterday' is not a FITS date")
    errors, out = fitsverify(h.file_bytes(), tmp_path)
    assert errors == 0, out


# -- hs-catchup list (pure: the composer's history) -------------------------------------------------


def test_catchup_lists_what_got_no_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_STATE_DIR", str(tmp_path))
    cfg = load_instance("LATISS")
    hist = tmp_path / "LATISS" / "composer-history.jsonl"
    hist.parent.mkdir(parents=True)
    recs = [{"done": NAME, "v": 1, "complete": True, "t": T0},
            {"skipped": "AT_O_20261124_000092", "reason": "endOfImageTelemetry for an image never started", "t": T0 + 60},
            {"duplicate": NAME, "reason": "imageName used again by a second exposure", "t": T0 + 120},
            {"skipped": "AT_O_20261124_000003", "reason": "CSC ATHeaderService is STANDBY, not ENABLED", "t": T0 + 180}]
    hist.write_text("".join(json.dumps(r) + "\n" for r in recs))
    from tools.catchup import Exposure

    listed = [Exposure("AT_O_20261124_000003", T0 + 180, None, None)]
    extra = not_composed(cfg, listed, 0.0, 1e12)
    assert listed[0].status == "NOT ANNOUNCED: skipped: CSC ATHeaderService is STANDBY, not ENABLED"
    assert [(e.image_name, e.status, e.regenerable) for e in extra] == [
        ("AT_O_20261124_000092", "NOT ANNOUNCED: set aside: endOfImageTelemetry for an image never started", False),
        (NAME, "NOT ANNOUNCED: second exposure under this name: imageName used again by a second exposure", False),
    ]
    assert not_composed(cfg, [], T0 + 100, 1e12)[0].image_name == NAME


# -- a real instance --------------------------------------------------------------------------------

BIAS, OBJ_INF, OBJ_NAN_ROT, LATER = (f"AT_{c}_20261124_{i:06d}" for c, i in (("O", 1), ("O", 2), ("O", 3), ("O", 4)))
FUTURE = "AT_O_20261124_000081"  # its startIntegration is stamped in 2065
NEVER_STARTED = "AT_O_20261124_000082"  # endOfImageTelemetry only
SCENARIO = {"instrument": "LATISS", "exposures": [
    {"start": "2026-11-25T03:04:06.457", "exptime": 0.0, "imgtype": "BIAS", "image_name": BIAS, "filter": "SDSSr_65mm",
     "omit": ["ATPtg.currentTarget"]},
    {"start": "2026-11-25T03:04:20.000", "exptime": 2.0, "ra": 40.0, "dec": -35.0, "rotpa": 10.0, "filter": "SDSSr_65mm",
     "imgtype": "OBJECT", "image_name": OBJ_INF},
    {"start": "2026-11-25T03:04:40.262", "exptime": 2.0, "ra": 41.0, "dec": -35.0, "rotpa": 10.0, "filter": "SDSSr_65mm",
     "imgtype": "OBJECT", "image_name": OBJ_NAN_ROT},
    {"start": "2026-11-25T03:05:40.000", "exptime": 2.0, "ra": 42.0, "dec": -35.0, "rotpa": 10.0, "filter": "SDSSr_65mm",
     "imgtype": "OBJECT", "image_name": LATER},
]}


def plan(emissions: list[Any]) -> list[Any]:
    """The night with its hostile parts, in bus order."""
    out = []
    for e in emissions:
        if e.topic == "startIntegration" and e.fields.get("imageName") == OBJ_INF:
            e = e._replace(fields={**e.fields, "exposureTime": INF, "timeout": INF})
        out.append(e)
    si2 = _camera(emissions, "startIntegration", OBJ_NAN_ROT)
    mp = _latest(emissions, "ATPtg", "mountPositions", si2.tai)
    out.append(mp._replace(tai=si2.tai - 0.0005, fields={**mp.fields, "cRioTimestamp": NAN}))
    # FUTURE: the events of the BIAS again under another name, its start stamped in 2065, 20 s later
    for topic in ("startIntegration", "startReadout", "endReadout", "endOfImageTelemetry"):
        e = _camera(emissions, topic, BIAS)
        fields = {**e.fields, "imageName": FUTURE, "imageNumber": 81}
        if topic == "startIntegration":
            fields[SND] = 3e9
        out.append(e._replace(tai=e.tai + 25.0, fields=fields))
    # NEVER_STARTED: an endOfImageTelemetry alone
    eot = _camera(emissions, "endOfImageTelemetry", BIAS)
    out.append(eot._replace(tai=eot.tai + 45.0, fields={**eot.fields, "imageName": NEVER_STARTED, "imageNumber": 82}))
    # a second exposure under the BIAS's name, after LATER
    for topic in ("startIntegration", "startReadout", "endReadout", "endOfImageTelemetry"):
        e = _camera(emissions, topic, BIAS)
        out.append(e._replace(tai=e.tai + 110.0))
    return sorted(out, key=lambda e: e.tai)


@dataclass
class HostileNight:
    """The deployment after the hostile night, with what was announced, reported and listed."""

    dep: Deployment
    cfg: InstanceConfig
    announced: dict[str, dict[str, Any]]  # imageName -> its largeFileObjectAvailable
    reports: list[dict[str, Any]]  # ctl.skipped.* payloads
    listing: str  # hs-catchup list, stdout and stderr
    composer_pid: int


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileNight]:
    from tests.conftest import fresh_domain_and_offset
    from tests.plain_dds import PlainReader
    from tools.sim.night import Night
    from tools.sim.scenario import scenario_from_dict

    base = tmp_path_factory.mktemp("hostile")
    sim = Night(scenario_from_dict(SCENARIO, "hostile night"))
    played = plan(list(sim.emissions()))
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(base / "run", base / "annex", domain, offset)
    mp = pytest.MonkeyPatch()
    dep.start()
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS")
        for k, v in dep.env.items():
            if k.startswith("HS_"):
                mp.setenv(k, v)
        cfg = load_instance("LATISS")
        composer_pid = dep.pid("latiss:latiss-composer")
        skipped = zmq.Context.instance().socket(zmq.SUB)
        skipped.setsockopt(zmq.SUBSCRIBE, b"ctl.skipped.")
        skipped.connect(cfg.endpoints.composer_pub)
        reader = PlainReader(domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
        player = _make_player(domain)
        player.prepare_topics(sim.topics())
        player.wait_for_readers(5.0)
        player.play(played, 20.0, camera="ATCamera")
        reader.wait(lambda got: {s["id"] for s in got} >= {BIAS, OBJ_INF, OBJ_NAN_ROT, LATER, FUTURE}, timeout=60)
        reports: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(reports) < 2 and time.monotonic() < deadline:
            if skipped.poll(200):
                reports.append(decode(skipped.recv_multipart()).payload)
        listing = subprocess.run([str(Path(sys.executable).parent / "hs-catchup"), "--instance", "LATISS", "list"],
                                 env={**os.environ, **dep.env}, capture_output=True, text=True, timeout=60)
        yield HostileNight(dep, cfg, {s["id"]: s for s in reader.poll()}, reports, listing.stdout + listing.stderr,
                           composer_pid)
    finally:
        dep.stop()
        mp.undo()


def header_of(night: HostileNight, image: str) -> Any:
    ann = night.announced[image]
    path = night.dep.annex / ann["url"].split("/", 3)[3]
    return fitsio.read_header(str(path)), json.loads(path.with_suffix(".prov.json").read_text()), path


def test_no_crash_and_every_real_exposure_announced(night: HostileNight) -> None:
    assert {BIAS, OBJ_INF, OBJ_NAN_ROT, LATER, FUTURE} <= set(night.announced)
    assert night.dep.pid("latiss:latiss-composer") == night.composer_pid, "the composer was restarted"
    assert "Traceback" not in night.dep.log("latiss-composer")


def test_nan_and_inf_make_keywords_undefined(night: HostileNight) -> None:
    h, prov, _ = header_of(night, OBJ_INF)
    assert h["HDRSTAT"] == "COMPLETE" and h["EXPTIME"] is None
    assert prov["keywords"]["EXPTIME"]["undefined"] == "value is infinite"
    h, prov, _ = header_of(night, OBJ_NAN_ROT)
    assert prov["keywords"]["ROTPA"]["undefined"].startswith("time series has no usable time origin")


def test_future_stamp_does_not_poison_the_deadline_clock(night: HostileNight) -> None:
    h, _, _ = header_of(night, LATER)
    assert h["HDRSTAT"] == "COMPLETE", h.get("HDRNOTE")
    h, _, _ = header_of(night, FUTURE)
    assert h["HDRSTAT"] == "INCOMPLETE" and "after its reception" in h["HDRNOTE"]
    journal = json.loads((Path(night.cfg.state_dir) / "LATISS" / "composer.json").read_text())
    assert journal["bus_time"] < tai_now() + 120.0
    status = ask(night.cfg.endpoints.composer_router, frames("ctl.request.status", {"op": "status"}))
    assert status["counts"]["event_times_not_believed"] >= 1
    assert f"startIntegration of {FUTURE}: private_sndStamp 3000000000.000" in night.dep.log("latiss-composer")


def test_never_started_and_second_exposure_are_reported_not_written(night: HostileNight) -> None:
    assert NEVER_STARTED not in night.announced
    reasons = {(r["imageName"], bool(r.get("duplicate"))): r["reason"] for r in night.reports}
    assert reasons[(NEVER_STARTED, False)].startswith("endOfImageTelemetry for an image never started")
    assert reasons[(BIAS, True)].startswith("imageName used again by a second exposure")
    versions = [s for s in night.announced.values() if s["id"] == BIAS]
    assert len(versions) == 1 and versions[0]["version"] == 1.0
    listing = night.listing
    assert re.search(rf"{NEVER_STARTED}\s.*NOT ANNOUNCED: set aside: endOfImageTelemetry for an image never started", listing)
    assert re.search(rf"{BIAS}\s.*NOT ANNOUNCED: second exposure under this name", listing)
    assert re.search(rf"{BIAS}\s.*announced v1 \(complete\)", listing)


@pytest.mark.skipif(shutil.which("fitsverify") is None, reason="fitsverify not installed")
def test_every_header_is_fitsverify_error_free(night: HostileNight, tmp_path: Path) -> None:
    for image in (BIAS, OBJ_INF, OBJ_NAN_ROT, LATER, FUTURE):
        h, _, path = header_of(night, image)
        errors, out = fitsverify(path.read_bytes(), tmp_path)
        assert errors == 0, f"{image}: {out}"
    assert header_of(night, BIAS)[0]["OBJECT"] == ""
    assert math.isfinite(header_of(night, OBJ_INF)[1]["points"]["readout"])
