"""Hostile frames on every socket reader: deeply nested JSON and oversize frames are rejected by
the shared decode path (counted, logged, answered), never a crash; the process goes on producing
headers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from procs.csc import CardsError, parse_cards
from protocols import envelope
from protocols.config import load_instance
from protocols.envelope import MAX_JSON_DEPTH, EnvelopeError, Sender, decode
from tests.conftest import run_sim
from tests.plain_dds import PlainReader
from tests.live_latiss import ask, push

SENDER = Sender("tester.LATISS@hostile-frames:0:0")
DEEP = b"[" * 200_000  # RecursionError in json.loads before the cap


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def frames(topic: str, payload: Any) -> list[bytes]:
    return SENDER.frames(topic, payload)


# -- the shared decode path (pure) ------------------------------------------------------------------


def test_deeply_nested_payload_is_an_envelope_error() -> None:
    f = frames("ctl.request.status", {})
    with pytest.raises(EnvelopeError, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
        decode([f[0], f[1], DEEP])


def test_deeply_nested_envelope_is_an_envelope_error() -> None:
    f = frames("ctl.request.status", {})
    with pytest.raises(EnvelopeError, match="malformed envelope frame"):
        decode([f[0], DEEP[:3000], f[2]])
    with pytest.raises(EnvelopeError, match="envelope frame of 200000 bytes is larger than 4096"):
        decode([f[0], DEEP, f[2]])


def test_nesting_cap_is_exact() -> None:
    assert decode(frames("ctl.x", nested(MAX_JSON_DEPTH))).payload == nested(MAX_JSON_DEPTH)
    with pytest.raises(EnvelopeError, match="nests deeper"):
        decode(frames("ctl.x", nested(MAX_JSON_DEPTH + 1)))


def test_nesting_hidden_behind_brackets_in_strings_is_found() -> None:
    tricky = "[" + '"]]]]", [' * 100 + "1" + "]" * 101
    with pytest.raises(EnvelopeError, match="nests deeper"):
        decode([*frames("ctl.x", {})[:2], tricky.encode()])


def test_oversize_frames_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope, "MAX_PAYLOAD_BYTES", 1000)
    f = frames("ctl.x", {"blob": "x" * 2000})
    with pytest.raises(EnvelopeError, match="payload frame of 2011 bytes is larger than 1000"):
        decode(f)
    with pytest.raises(EnvelopeError, match="topic frame of 2000 bytes"):
        decode([b"t" * 2000, f[1], b"{}"])


def test_sal_topics_are_capped_too() -> None:
    with pytest.raises(EnvelopeError, match="envelope frame of 200000 bytes"):
        decode([b"sal.ATCamera.startIntegration", DEEP, b""])


def test_operator_cards_deeply_nested() -> None:
    with pytest.raises(CardsError, match="cards is not valid JSON: cards nests deeper"):
        parse_cards("[" * 100_000)
    with pytest.raises(CardsError, match="given twice"):
        parse_cards('{"A": 1, "A": 2}')


# -- real processes ---------------------------------------------------------------------------------

PROGRAMS = ("latiss-listener", "latiss-cache", "latiss-composer", "latiss-publisher", "latiss-csc")


def hostile_messages(topic: str) -> dict[str, list[bytes]]:
    good = frames(topic, {"op": "status"})
    return {
        "deep payload": [good[0], good[1], DEEP],
        "deep envelope": [good[0], DEEP, good[2]],
        "oversize envelope": [good[0], b" " * 10_000, good[2]],
        "payload nested 100 levels": frames(topic, {"op": "status", "x": nested(100)}),
    }


def one_exposure(tmp: Path) -> Path:
    scen = {"instrument": "LATISS", "exposures": [{"start": "2026-11-25T03:04:06.457", "exptime": 1.0, "ra": 40.0,
                                                    "dec": -35.0, "rotpa": 0.0, "filter": "SDSSr_65mm",
                                                    "imgtype": "OBJECT", "image_name": "AT_O_20261124_000007"}]}
    path = tmp / "one.yaml"
    path.write_text(yaml.safe_dump(scen))
    return path


def test_every_reader_survives_hostile_frames_and_still_produces_headers(
    deployment_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment_factory()
    for k, v in dep.env.items():
        if k.startswith("HS_"):
            monkeypatch.setenv(k, v)
    ep = load_instance("LATISS").endpoints
    pids = {p: dep.pid(f"latiss:{p}") for p in PROGRAMS}
    reader = PlainReader(dep.domain, "ATHeaderService", "logevent_largeFileObjectAvailable")

    answers: dict[str, dict[str, Any]] = {}
    for name, endpoint, topic in (("cache", ep.cache_router, "ctl.request.status"),
                                  ("composer", ep.composer_router, "ctl.request.status"),
                                  ("listener", ep.listener_router, "ctl.request.replay")):
        answers[name] = {case: ask(endpoint, f, timeout=10.0) for case, f in hostile_messages(topic).items()}
    push(ep.publisher_pull, list(hostile_messages("hdr.LATISS.AT_O_20261124_000099").values()))

    for name, got in answers.items():
        for case, reply in got.items():
            assert reply is not None, f"{name} did not answer after {case}"
            assert "error" in reply, f"{name} accepted {case}: {str(reply)[:200]}"
            assert any(s in reply["error"] for s in ("nests deeper", "larger than")), f"{name} {case}: {reply['error']}"

    assert run_sim(dep, one_exposure(tmp_path), speed=10).returncode == 0
    got = reader.wait(lambda g: "AT_O_20261124_000007" in {s["id"] for s in g}, 60)
    assert "AT_O_20261124_000007" in {s["id"] for s in got}, "no header after the hostile frames"
    assert {p: dep.pid(f"latiss:{p}") for p in PROGRAMS} == pids, "a process was restarted"

    deadline = time.monotonic() + 10
    while "nests deeper" not in dep.log("latiss-publisher") and time.monotonic() < deadline:
        time.sleep(0.2)
    publisher_log = dep.log("latiss-publisher")
    assert "header message rejected: payload of hdr.LATISS.AT_O_20261124_000099 nests deeper than 64 levels" in publisher_log
    assert "header message rejected: envelope frame of 200000 bytes is larger than 4096" in publisher_log
    status = ask(ep.composer_router, frames("ctl.request.status", {"op": "status"}))
    assert status["counts"]["bad_requests"] >= 4
    assert "Traceback" not in "".join(dep.log(f"latiss-{p}") for p in ("cache", "composer", "publisher", "listener"))
