"""Bad input at the deployment level: one real LATISS deployment under supervisord (module fixture
``night``). A night of five exposures is played on its DDS domain at speed 20 with bad samples and
bad camera events interleaved in bus time, while garbage multipart messages are sent to the cache
ROUTER, the composer ROUTER and the publisher PULL socket. Every exposure's header is then checked
against the simulator's plan (tests/oracle.py), except the keyword deliberately corrupted, which
must be undefined with the reason in the ``<image>.prov.json`` side-car. Requests that once killed a
process are sent last in no particular order: each asserts that the process kept its pid.

The tests only read what the night left (logs, headers, counters) or add requests whose effect they
check alone, so any of them can run by itself or in any order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from header.astro import tai_iso
from header.cards import fits_type
from protocols.config import InstanceConfig, load_keyword_map
from protocols.envelope import decode
from tests.live_latiss import (
    LATISS_PROGRAMS,
    LiveLatiss,
    announced,
    annex_path,
    ask,
    cache_status,
    composer_status,
    frames,
    live_latiss,
    primary,
    prov,
    push,
    wait_for,
)
from tests.oracle import expected_value
from tools.sim.night import Emission
from tools.sim.player import Player

NAN, INF = float("nan"), float("inf")

SCENARIO = {
    "instrument": "LATISS",
    "exposures": [
        {"start": "2026-11-25T03:04:06.457", "exptime": 10.0, "ra": 40.1167, "dec": -40.0301, "rotpa": 183.74,
         "filter": "SDSSr_65mm", "imgtype": "OBJECT", "object": "HD 164461"},
        {"start": "2026-11-25T03:04:30.000", "exptime": 5.0, "ra": 20.5, "dec": -60.2, "rotpa": 12.0,
         "filter": "SDSSg_65mm", "imgtype": "OBJECT", "object": "NGC 6752"},
        {"start": "2026-11-25T03:04:50.000", "exptime": 4.0, "ra": 60.0, "dec": -20.0, "rotpa": 90.0,
         "filter": "SDSSr_65mm", "imgtype": "ENGTEST", "object": "HD 185975"},
        {"start": "2026-11-25T03:05:10.000", "exptime": 3.0, "ra": 62.0, "dec": -25.0, "rotpa": 45.0,
         "filter": "SDSSi_65mm", "imgtype": "OBJECT", "object": "47 Tuc field",
         "changes": {"ATDomeTrajectory.telescopeVignetted.vignetted": 7}},  # an enum value without a name
        {"start": "2026-11-25T03:05:40.000", "exptime": 5.0, "ra": 30.0, "dec": -45.0, "rotpa": 10.0,
         "filter": "SDSSr_65mm", "imgtype": "OBJECT", "object": "Fornax field"},
    ],
}
SND = "__snd__"  # fields key of an injected emission: its private_sndStamp, when not its bus (arrival) time
X_IMAGE = "AT_O_20261124_000091"  # events out of order (startReadout first), short additionalValues
Z_IMAGE = "AT_O_20261124_000092"  # endOfImageTelemetry only: never started
Y_IMAGE = "AT_O_20261124_000093"  # startReadout only: nothing else ever comes
NO_HDUS = "AT_O_20261124_000094"  # a header message with no HDU pushed to the publisher
SHORT_CARDS = "AT_O_20261124_000095"  # a header message whose cards are not 80-character images
TRAVERSAL = "../../../escaped_AT"  # an imageName that is a path
LONG_NOTE = "Scheduler note " + "x" * 585  # 600 characters
TARGET_NON_ASCII = "Étoile de Barnard"

# (exposure index, keyword) -> the reason the keyword must be undefined for
CORRUPTED = {
    (1, "HUMIDITY"): "value is NaN",
    (2, "WINDSPD"): "value is infinite",
    (2, "OBJECT"): "string holds non-ASCII or control characters",
    (3, "SCHNOTE"): "string of 600 characters is longer than 544",
    (3, "VIGNETTE"): "enum value 7 has no name",
}
SENSOR_KEYWORDS = {"CCDSLOT", "RAFTBAY", "CCD_MANU", "CCD_TYPE", "CCD_SERN", "LSST_NUM", "SEQCKSUM", "SEQNAME",
                   "REBNAME", "CONTNUM", "CCDTEMP", "OVERH", "OVERV", "PREH"}


def _latest(emissions: list[Emission], component: str, topic: str, before: float, index: int | None = None) -> Emission:
    return [e for e in emissions if e.component == component and e.topic == topic and e.tai <= before
            and (index is None or e.sal_index == index)][-1]


def _camera(emissions: list[Emission], topic: str, image: str) -> Emission:
    return next(e for e in emissions if e.topic == topic and e.fields.get("imageName") == image)


def plan_injections(emissions: list[Emission], images: list[str]) -> tuple[list[Emission], list[Emission]]:
    """Bad samples and bad camera events, each an Emission at its bus (arrival) time.

    Returns (telemetry_and_events, camera_events): the first are what the bus carried for the
    oracle; camera events are judged by their own tests.
    """
    starts = [_camera(emissions, "startIntegration", im).tai for im in images]
    bus: list[Emission] = []
    # 1: NaN relative humidity just before exposure 1 starts; 2: +inf wind speed before exposure 2
    rh = _latest(emissions, "ESS", "relativeHumidity", starts[1], 301)
    bus.append(rh._replace(tai=starts[1] - 0.0005, fields={**rh.fields, "relativeHumidityItem": NAN}))
    af = _latest(emissions, "ESS", "airFlow", starts[2], 301)
    bus.append(af._replace(tai=starts[2] - 0.0005, fields={**af.fields, "speed": INF}))
    # 2: non-ASCII target name (same target otherwise); 3: a 600-character scheduler note
    ct = _latest(emissions, "ATPtg", "currentTarget", starts[2])
    bus.append(ct._replace(tai=starts[2] - 0.0004, fields={**ct.fields, "targetName": TARGET_NON_ASCII}))
    st = _latest(emissions, "Scheduler", "target", starts[3], 2)
    bus.append(st._replace(tai=starts[3] - 0.0005, fields={**st.fields, "note": LONG_NOTE}))

    cam: list[Emission] = []
    si0 = _camera(emissions, "startIntegration", images[0])
    sr0 = _camera(emissions, "startReadout", images[0])
    eot0 = _camera(emissions, "endOfImageTelemetry", images[0])

    def start_of(name: str, t: float, **extra: Any) -> dict[str, Any]:
        return {**si0.fields, "imageName": name, "imageNumber": int(name[-6:]) if name[-6:].isdigit() else 0,
                "timestampAcquisitionStart": t, **extra}

    # duplicate startIntegration for exposure 1 (a different exposure time: the first one wins)
    si1 = _camera(emissions, "startIntegration", images[1])
    cam.append(si1._replace(tai=si1.tai + 0.5, fields={**si1.fields, "exposureTime": 99.0}))
    # a startIntegration with an empty imageName
    cam.append(si0._replace(tai=starts[2] - 5.0, fields=start_of("", starts[2] - 5.0)))
    # startReadout of exposure 3 again, with a NaN private_sndStamp
    sr3 = _camera(emissions, "startReadout", images[3])
    cam.append(sr3._replace(tai=sr3.tai + 0.5, fields={**sr3.fields, SND: NAN}))
    # duplicate endOfImageTelemetry for exposure 4, after its header was written
    eot4 = _camera(emissions, "endOfImageTelemetry", images[4])
    cam.append(eot4._replace(tai=eot4.tai + 0.5, fields={**eot4.fields, "darkTime": 999.0}))
    # X: startReadout arrives first, startIntegration 4 s (bus) later, then endOfImageTelemetry
    tx = starts[0] + 14.0
    cam.append(sr0._replace(tai=tx + 2.0, fields={**sr0.fields, "imageName": X_IMAGE, "imageNumber": 91}))
    cam.append(si0._replace(tai=tx + 6.0, fields={**start_of(X_IMAGE, tx, exposureTime=2.0),
                                                   "additionalKeys": "groupId:imageType:testType:reason:program",
                                                   "additionalValues": "grp-X:OBJECT", SND: tx}))
    cam.append(eot0._replace(tai=tx + 7.0, fields={**eot0.fields, "imageName": X_IMAGE, "imageNumber": 91,
                                                   "timestampDateObs": tx, "timestampDateEnd": tx + 2.0,
                                                   SND: tx + 3.0}))
    # Y: a lone startReadout
    cam.append(sr0._replace(tai=starts[0] + 19.0, fields={**sr0.fields, "imageName": Y_IMAGE, "imageNumber": 93}))
    # Z: endOfImageTelemetry of an image never started
    tz = starts[2] + 10.0
    cam.append(eot0._replace(tai=tz, fields={**eot0.fields, "imageName": Z_IMAGE, "imageNumber": 92,
                                             "timestampDateObs": tz - 3.0, "timestampDateEnd": tz - 1.0}))
    # an imageName that is a path
    cam.append(eot0._replace(tai=tz + 5.0, fields={**eot0.fields, "imageName": TRAVERSAL,
                                                   "timestampDateObs": tz + 2.0, "timestampDateEnd": tz + 4.0}))
    return bus, cam


def _make_player(domain: int) -> Player:
    from protocols.timescale import utc_from_tai
    from tools.sim.player import build_sample

    class InjectingPlayer(Player):
        """hs-sim's player, plus emissions whose private_sndStamp differs from their bus time."""

        def write(self, e: Emission) -> None:
            fields = dict(e.fields)
            snd = fields.pop(SND, e.tai)
            w = self.writer(e.component, e.topic)
            key = (e.component, e.topic)
            self._seq[key] = self._seq.get(key, 0) + 1
            smp = build_sample(e.component, e.topic, e.sal_index, fields, private_sndStamp=snd,
                               private_seqNum=self._seq[key], private_identity=e.component,
                               private_origin=os.getpid())
            w.write(smp, timestamp=int(round(utc_from_tai(e.tai) * 1e9)))

    return InjectingPlayer(domain, log=open(os.devnull, "w"))  # noqa: SIM115


# -- ZeroMQ garbage ----------------------------------------------------------------------------------


def _wrong_version(topic: str, payload: Any) -> list[bytes]:
    f = frames(topic, payload)
    env = json.loads(f[1])
    env["v"] = 2
    return [f[0], json.dumps(env).encode(), f[2]]


def router_garbage(kind: str) -> dict[str, list[bytes]]:
    """Garbage requests for a ROUTER (cache or composer), by case name."""
    status = frames("ctl.request.status", {"op": "status"})
    cases = {
        "wrong_frame_count": status[:2],
        "envelope_not_json": [status[0], b"{v: 1, seq", status[2]],
        "wrong_envelope_version": _wrong_version("ctl.request.status", {"op": "status"}),
        "payload_not_json": [status[0], status[1], b"\xff\xfe{op: status"],
        "unknown_op": frames("ctl.request.frobnicate", {"op": "frobnicate"}),
    }
    if kind == "cache":
        cases["payload_not_an_object"] = frames("ctl.request.status", ["op", "status"])
        cases["collect_with_bad_time"] = frames("ctl.request.collect", {"op": "collect", "points": {"start": "soon"},
                                                                        "topics": {"start": ["ESS.airFlow:301"]}})
        cases["range_without_key"] = frames("ctl.request.range", {"op": "range", "t0": 0, "t1": 1})
    else:
        cases["sensor_of_unknown_image"] = frames("ctl.request.sensor", {"op": "sensor", "imageName": "AT_O_19990101_000001",
                                                                        "sensor": "R00_S00"})
    return cases


CACHE_REPLIES = {
    "wrong_frame_count": "expected 3 frames (topic, envelope, payload), got 2",
    "envelope_not_json": "malformed envelope frame",
    "wrong_envelope_version": "unsupported envelope version 2 (this build speaks 1)",
    "payload_not_json": "payload of ctl.request.status is not JSON",
    "payload_not_an_object": "request payload is not an object",
    "unknown_op": "unknown op 'frobnicate'",
    "collect_with_bad_time": "bad request: could not convert string to float: 'soon'",
    "range_without_key": "bad request: 'key'",
}
COMPOSER_REPLIES = {
    "wrong_frame_count": "expected 3 frames (topic, envelope, payload), got 2",
    "envelope_not_json": "malformed envelope frame",
    "wrong_envelope_version": "unsupported envelope version 2 (this build speaks 1)",
    "payload_not_json": "payload of ctl.request.status is not JSON",
    "sensor_of_unknown_image": "AT_O_19990101_000001 is not among the last 20 headers composed",
}


def header_message(image: str, hdus: list[dict[str, Any]]) -> list[bytes]:
    return frames(f"hdr.LATISS.{image}", {"imageName": image, "instrument": "LATISS", "dayobs": "20261124",
                                          "version": 1, "complete": True, "reasons": [], "hdus": hdus,
                                          "provenance": {}})


PUBLISHER_GARBAGE = {
    "wrong_frame_count": ([b"hdr.LATISS.x"], "header message rejected: expected 3 frames (topic, envelope, payload), got 1"),
    "envelope_not_json": ([b"hdr.LATISS.x", b"\x00\x01", b"{}"], "header message rejected: malformed envelope frame"),
    "wrong_envelope_version": (_wrong_version("hdr.LATISS.x", {}), "header message rejected: unsupported envelope version 2"),
    "payload_not_json": ([b"hdr.LATISS.x", frames("x", {})[1], b"{'hdus': ["], "header message rejected: payload of hdr.LATISS.x is not JSON"),
    "payload_without_image_name": (frames("hdr.LATISS.x", {"version": 1, "hdus": []}), "header message rejected: 'imageName'"),
}



def inject_zmq(cfg: InstanceConfig, out: dict[str, dict[str, Any]]) -> None:
    """Runs in a thread while the night plays: garbage on every socket that takes requests."""
    ep = cfg.endpoints
    out["cache"] = {name: ask(ep.cache_router, f) for name, f in router_garbage("cache").items()}
    out["composer"] = {name: ask(ep.composer_router, f) for name, f in router_garbage("composer").items()}
    push(ep.publisher_pull, [m for m, _ in PUBLISHER_GARBAGE.values()]
         + [header_message(NO_HDUS, []), header_message(SHORT_CARDS, [{"name": "PRIMARY", "cards": ["SIMPLE = T", "END"]}])])


# -- the deployment --------------------------------------------------------------------------------


@dataclass
class BadNight(LiveLatiss):
    """The deployment after the bad-input night, and what was played and answered during it."""

    pids: dict[str, int]  # program -> pid once the instance ran
    images: list[str]  # the scenario's five exposures, in order
    emissions: list[Emission]  # what the bus carried (telemetry and events, bad samples included)
    zmq: dict[str, dict[str, Any]]  # socket ("cache", "composer") -> garbage case -> reply payload


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadNight]:
    from tools.sim.night import Night
    from tools.sim.scenario import scenario_from_dict

    scenario = scenario_from_dict(SCENARIO, "bad-input night")
    sim_night = Night(scenario)
    emissions = list(sim_night.emissions())
    images = [e.fields["imageName"] for e in emissions if e.topic == "startIntegration"]
    bus, cam = plan_injections(emissions, images)
    played = sorted(emissions + bus + cam, key=lambda e: e.tai)

    with live_latiss(tmp_path_factory.mktemp("bad_input"), _make_player) as live:
        pids = {p: live.dep.pid(f"latiss:{p}") for p in LATISS_PROGRAMS}
        live.player.prepare_topics(sim_night.topics() | {(e.component, e.topic) for e in bus + cam})
        live.player.wait_for_readers(5.0)
        zmq_out: dict[str, dict[str, Any]] = {}
        threads: list[threading.Thread] = []

        def on_exposure(e: Emission) -> None:
            if e.fields.get("imageName") == images[2]:
                th = threading.Thread(target=inject_zmq, args=(live.cfg, zmq_out), daemon=True)
                th.start()
                threads.append(th)

        live.player.play(played, 20.0, camera="ATCamera", on_exposure=on_exposure)
        expected = set(images) | {X_IMAGE}
        live.reader.wait(lambda got: {s["id"] for s in got} >= expected, timeout=60)
        for th in threads:
            th.join(timeout=30)
        time.sleep(0.5)
        live.reader.poll()
        yield BadNight(live.dep, live.cfg, live.reader, live.player, live.base, pids=pids, images=images,
                       emissions=sorted(emissions + bus, key=lambda e: e.tai), zmq=zmq_out)



def assert_same_value(key: str, got: Any, want: Any) -> None:
    if isinstance(want, bool):
        assert got == want, key
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), f"{key}: {got!r} != {want!r}"
    elif isinstance(want, int):
        assert isinstance(got, int) and got == want, f"{key}: {got!r} != {want!r}"
    else:
        assert str(got).rstrip() == str(want).rstrip(), f"{key}: {got!r} != {want!r}"


def test_every_exposure_header_untouched_but_the_corrupted_keyword(night: BadNight) -> None:
    kmap = load_keyword_map(night.cfg)
    ann = announced(night)
    checked = 0
    for i, image in enumerate(night.images):
        assert image in ann, f"{image} not announced"
        assert ann[image]["version"] == 1.0
        p, s = primary(night, image, 0), primary(night, image, 1)
        assert p["HDRSTAT"] == "COMPLETE", p.get("HDRNOTE")
        for src in kmap.keywords:
            if (i, src.keyword) in CORRUPTED:
                continue
            hdr = s if src.keyword in SENSOR_KEYWORDS else p
            want = expected_value(night.emissions, src, image)
            assert want is not None, f"simulator published nothing for {src.keyword}"
            assert src.keyword in hdr, f"{image}: {src.keyword} missing"
            assert_same_value(f"{image} {src.keyword}", hdr[src.keyword], want)
            checked += 1
        data = annex_path(night, image).read_bytes()
        assert hashlib.md5(data).hexdigest() == ann[image]["checkSum"]
    assert checked >= 5 * len(kmap.keywords) - len(CORRUPTED)


def _assert_undefined(night: BadNight, index: int, keyword: str) -> None:
    image = night.images[index]
    h = primary(night, image)
    blank = "" if fits_type(keyword) == "str" else None  # FITS string keywords are never written undefined
    assert keyword in h and h[keyword] == blank, f"{image} {keyword} = {h.get(keyword)!r}, expected undefined"
    reason = CORRUPTED[(index, keyword)]
    assert prov(night, image)["keywords"][keyword]["undefined"] == reason
    log = night.dep.log("latiss-composer")
    assert f"{image}: {keyword} written undefined: {reason}" in log


@pytest.mark.parametrize(("index", "keyword"), [(1, "HUMIDITY"), (2, "WINDSPD")], ids=["nan", "inf"])
def test_non_finite_telemetry_is_undefined(night: BadNight, index: int, keyword: str) -> None:
    _assert_undefined(night, index, keyword)


def test_non_ascii_event_string_is_undefined(night: BadNight) -> None:
    _assert_undefined(night, 2, "OBJECT")
    # the rest of the same sample (RA, DEC) is used as usual
    h = primary(night, night.images[2])
    assert math.isclose(h["RA"], 60.0, abs_tol=1e-6) and math.isclose(h["DEC"], -20.0, abs_tol=1e-6)


def test_oversize_string_is_undefined(night: BadNight) -> None:
    _assert_undefined(night, 3, "SCHNOTE")


def test_enum_value_without_name_is_undefined(night: BadNight) -> None:
    _assert_undefined(night, 3, "VIGNETTE")
    assert primary(night, night.images[3])["VIGN_MIN"] in ("NO", "PARTIALLY", "FULLY", "UNKNOWN")


def test_bad_values_are_counted(night: BadNight) -> None:
    counts = composer_status(night)["counts"]
    assert counts.get("bad_values", 0) >= 3  # OBJECT, SCHNOTE, VIGNETTE (more once NaN/inf are caught)


def test_second_start_integration_under_a_used_name_is_reported(night: BadNight) -> None:
    image = night.images[1]
    assert primary(night, image)["EXPTIME"] == 5.0  # the first exposure keeps the name's header
    assert composer_status(night)["counts"].get("duplicate_image_names", 0) >= 1
    assert f"{image}: no header: imageName used again by a second exposure" in night.dep.log("latiss-composer")


def test_duplicate_end_of_image_telemetry_after_done(night: BadNight) -> None:
    image = night.images[4]
    versions = [s["version"] for s in night.reader.poll() if s["id"] == image]
    assert versions == [1.0], versions
    assert primary(night, image)["DARKTIME"] != 999.0
    assert composer_status(night)["counts"].get("events_after_done", 0) >= 1


def test_event_after_done_is_logged(night: BadNight) -> None:
    image = night.images[4]
    log = night.dep.log("latiss-composer")
    assert any(image in line and "endOfImageTelemetry" in line and "after" in line for line in log.splitlines())


def test_empty_image_name_is_counted(night: BadNight) -> None:
    assert composer_status(night)["counts"].get("events_without_image", 0) >= 1
    assert "startIntegration without an imageName ignored" in night.dep.log("latiss-composer")


def test_camera_event_with_nan_sndstamp(night: BadNight) -> None:
    image = night.images[3]
    assert composer_status(night)["counts"].get("bad_events", 0) >= 1
    assert f"startReadout for {image} has no usable private_sndStamp: ignored" in night.dep.log("latiss-composer")
    assert cache_status(night)["counts"].get("bad_messages", 0) >= 1
    assert "sample has no usable private_sndStamp: None" in night.dep.log("latiss-cache")
    assert primary(night, image)["HDRSTAT"] == "COMPLETE"


def test_out_of_order_events(night: BadNight) -> None:
    h = primary(night, X_IMAGE)
    assert h["HDRSTAT"] == "COMPLETE"
    assert h["OBSID"] == X_IMAGE and h["EXPTIME"] == 2.0
    assert h["GROUPID"] == "grp-X" and h["IMGTYPE"] == "OBJECT"
    p = prov(night, X_IMAGE)
    for kw, key in (("TESTTYPE", "testType"), ("REASON", "reason"), ("PROGRAM", "program")):
        assert h[kw] is None
        assert p["keywords"][kw]["undefined"] == f"additionalValues has no entry for {key}"
    # the collection points are the events' own times, although startIntegration arrived 4 s (bus) late
    assert p["points"]["start"] < p["points"]["readout"] < p["points"]["end"]
    assert h["DATE-OBS"] == tai_iso(p["points"]["start"])


def test_end_of_image_telemetry_for_unknown_image(night: BadNight) -> None:
    assert Z_IMAGE not in announced(night)  # no header for an image that never existed
    assert f"{Z_IMAGE}: no header: endOfImageTelemetry for an image never started" in night.dep.log("latiss-composer")
    assert composer_status(night)["counts"].get("set_aside", 0) >= 1


def test_lone_start_readout_is_written_incomplete(night: BadNight) -> None:
    assert wait_for(lambda: Y_IMAGE in announced(night), timeout=3.0), composer_status(night)["open"]
    h = primary(night, Y_IMAGE)
    assert h["HDRSTAT"] == "INCOMPLETE" and "startIntegration not received" in h["HDRNOTE"]


def test_image_name_that_is_a_path_is_rejected(night: BadNight) -> None:
    escaped = list(night.base.rglob("escaped_AT*"))
    assert escaped == [], f"written outside the annex: {escaped}"
    assert TRAVERSAL not in announced(night)
    assert "../../../escaped_AT" in night.dep.log("latiss-composer")
    assert composer_status(night)["counts"].get("bad_events", 0) >= 2  # this one and the NaN sndStamp


# -- garbage on the ZeroMQ sockets -----------------------------------------------------------------


def test_cache_router_garbage_gets_specific_errors(night: BadNight) -> None:
    replies = night.zmq["cache"]
    for case, text in CACHE_REPLIES.items():
        assert replies.get(case) is not None, f"{case}: no reply"
        assert text in replies[case].get("error", ""), f"{case}: {replies[case]}"
    assert cache_status(night)["counts"].get("bad_requests", 0) >= len(CACHE_REPLIES) - 1  # unknown_op: see below


def test_composer_router_garbage_gets_specific_errors(night: BadNight) -> None:
    replies = night.zmq["composer"]
    for case, text in COMPOSER_REPLIES.items():
        assert replies.get(case) is not None, f"{case}: no reply"
        assert text in replies[case].get("error", ""), f"{case}: {replies[case]}"
    assert composer_status(night)["counts"].get("bad_requests", 0) >= len(COMPOSER_REPLIES)
    # a sensor that the image does not have
    reply = ask(night.cfg.endpoints.composer_router,
                frames("ctl.request.sensor", {"op": "sensor", "imageName": night.images[0], "sensor": "R99_S99"}))
    assert "sensor R99_S99 is not in this image (the camera reported 1)" in reply["error"]


def test_composer_unknown_op_is_named(night: BadNight) -> None:
    assert night.zmq["composer"]["unknown_op"] == {"error": "unknown op 'frobnicate'"}


def test_cache_unknown_op_is_counted(night: BadNight) -> None:
    before = cache_status(night)["counts"].get("bad_requests", 0)
    assert ask(night.cfg.endpoints.cache_router, frames("ctl.request.frobnicate", {"op": "frobnicate"})) == {
        "error": "unknown op 'frobnicate'"}
    assert cache_status(night)["counts"].get("bad_requests", 0) == before + 1


@pytest.mark.parametrize("program", ["latiss-cache", "latiss-composer"])
def test_rejected_requests_are_logged(night: BadNight, program: str) -> None:
    log = night.dep.log(program)
    assert "unsupported envelope version 2" in log
    assert "expected 3 frames" in log


def test_publisher_pull_garbage_is_logged(night: BadNight) -> None:
    log = night.dep.log("latiss-publisher")
    for case, (_, text) in PUBLISHER_GARBAGE.items():
        assert text in log, f"{case}: {text!r} not in the publisher log"


@pytest.mark.parametrize("image", [NO_HDUS, SHORT_CARDS], ids=["no_hdus", "cards_not_80_characters"])
def test_publisher_rejects_a_header_that_is_not_fits(night: BadNight, image: str) -> None:
    assert image not in announced(night)
    assert not (night.annex / "LATISS" / "20261124" / f"{image}.fits").exists()
    assert f"header message rejected: {image}" in night.dep.log("latiss-publisher")


def test_publisher_counts_are_visible_in_tap(night: BadNight) -> None:
    import zmq

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"ctl.status.publisher")
    sub.connect(night.cfg.endpoints.publisher_pub)
    try:
        got = sub.poll(2500)
        assert got, "no ctl.status.publisher message in 2.5 s"
        msg = decode(sub.recv_multipart())
        assert msg.payload["counts"]["bad_messages"] >= len(PUBLISHER_GARBAGE)
    finally:
        sub.close(linger=0)


def test_processes_did_not_restart(night: BadNight) -> None:
    dep = night.dep
    status = dep.status()
    for p in LATISS_PROGRAMS:
        assert status[f"latiss:{p}"] == "RUNNING", status
        assert dep.pid(f"latiss:{p}") == night.pids[p], f"{p} restarted"
    for p in LATISS_PROGRAMS:
        assert "Traceback" not in dep.log(p), dep.log(p)[-3000:]



# ================================================================================================
# Requests that once killed a process: each asserts that the process kept its pid
# ================================================================================================

def _survives(night: BadNight, program: str, send: Callable[[], Any]) -> Any:
    """Send bad input; the reply (or None); asserts the process kept its pid."""
    dep = night.dep
    dep.wait_running("LATISS", enable=False)
    before = dep.pid(f"latiss:{program}")
    reply = send()
    time.sleep(1.0)
    after = dep.pid(f"latiss:{program}")
    if after != before:
        dep.wait_running("LATISS", enable=False)
    assert after == before, f"{program} died and was restarted (pid {before} -> {after})"
    return reply


def test_composer_request_payload_not_an_object(night: BadNight) -> None:
    ep = night.cfg.endpoints.composer_router
    reply = _survives(night, "latiss-composer", lambda: ask(ep, frames("ctl.request.status", ["op", "status"])))
    assert reply == {"error": "request payload is not an object"}


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "status", "after": "listener"}, "bad request"),
        ({"op": "status", "after": {"sender": "x", "seq": 1e999}}, "bad request"),
        ({"op": "range", "after": {"sender": "nobody", "seq": 5}}, "bad request: 'key'"),
    ],
    ids=["after_not_an_object", "after_seq_infinite", "parked_range_without_key"],
)
def test_cache_request_with_malformed_after(night: BadNight, request_: dict[str, Any], error: str) -> None:
    ep = night.cfg.endpoints.cache_router
    reply = _survives(night, "latiss-cache", lambda: ask(ep, frames("ctl.request.x", request_), timeout=2.0))
    assert reply is not None and error in reply.get("error", ""), reply


def test_publisher_header_with_infinite_version(night: BadNight) -> None:
    ep = night.cfg.endpoints.publisher_pull
    msg = frames("hdr.LATISS.AT_O_20261124_000096", {"imageName": "AT_O_20261124_000096", "version": INF,
                                                    "dayobs": "20261124", "hdus": []})
    _survives(night, "latiss-publisher", lambda: push(ep, [msg]))
    assert "header message rejected: cannot convert float infinity to integer" in night.dep.log("latiss-publisher")
