"""Typed request and control messages: the same JSON keys as the dictionaries they replaced, and a
decode that names what is wrong with a hostile payload instead of failing deeper down."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.envelope import EnvelopeError
from protocols.messages import (
    CACHE_REQUESTS,
    COMPOSER_REQUESTS,
    Acknowledgement,
    After,
    CollectRequest,
    Fault,
    LatestRequest,
    OperatorWarning,
    RangeRequest,
    RecomposeRequest,
    RefillRequest,
    Rejected,
    ReplayRequest,
    SensorRequest,
    Skipped,
    StatusRequest,
    UnknownOp,
    Window,
    decode_request,
)


@pytest.mark.parametrize(
    "msg, wire",
    [
        (CollectRequest({"start": 1.0}, {"start": ["ESS.airFlow:301"]}, [Window("ESS.airFlow:301", 1.0, 2.0)],
                        {"ESS.airFlow:301": ["speed"]}, after=After("listener.LATISS@h:1:0", 7)),
         {"op": "collect", "points": {"start": 1.0}, "topics": {"start": ["ESS.airFlow:301"]},
          "windows": [{"key": "ESS.airFlow:301", "t0": 1.0, "t1": 2.0}], "fields": {"ESS.airFlow:301": ["speed"]},
          "after": {"sender": "listener.LATISS@h:1:0", "seq": 7}}),
        (RangeRequest("ATCamera.startIntegration:0", 0.0, 1e12), {"op": "range", "key": "ATCamera.startIntegration:0", "t0": 0.0, "t1": 1e12}),
        (LatestRequest(["a:0", "b:1"]), {"op": "latest", "keys": ["a:0", "b:1"]}),
        (StatusRequest(), {"op": "status"}),
        (ReplayRequest(41), {"op": "replay", "since": 41}),
        (RefillRequest(1.0, 2.0), {"op": "refill", "t0": 1.0, "t1": 2.0}),
        (SensorRequest("MC_O_20261125_000001", "R22_S11"), {"op": "sensor", "imageName": "MC_O_20261125_000001", "sensor": "R22_S11"}),
        (RecomposeRequest(["AT_O_20261125_000001"]), {"op": "recompose", "imageNames": ["AT_O_20261125_000001"]}),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, dict) else "",
)  # fmt: skip
def test_requests_keep_their_wire_keys_and_round_trip(msg: Any, wire: dict[str, Any]) -> None:
    assert msg.encode() == wire
    assert msg.topic() == f"ctl.request.{wire['op']}"
    assert decode_request(wire, CACHE_REQUESTS + COMPOSER_REQUESTS + (ReplayRequest, RefillRequest)) == msg


@pytest.mark.parametrize(
    "payload, error",
    [
        (["op", "status"], "request payload is not an object"),
        ({"op": "collect", "points": {"start": "soon"}}, "could not convert string to float: 'soon'"),
        ({"op": "collect", "points": {}, "topics": {"start": "ESS.airFlow:301"}}, "topics of start is not a list of text"),
        ({"op": "collect", "points": {}, "topics": {}, "windows": [{"key": "k", "t0": 0}]}, "'t1'"),
        ({"op": "range", "t0": 0, "t1": 1}, "'key'"),
        ({"op": "range", "key": 5, "t0": 0, "t1": 1}, "key is not text"),
        ({"op": "status", "after": "listener"}, "after is not an object"),
        ({"op": "status", "after": {"sender": "x", "seq": 1e999}}, "after.seq is not a sequence number"),
        ({"op": "latest", "keys": "a:0"}, "keys is not a list of text"),
    ],
)
def test_malformed_cache_requests_are_refused_with_the_reason(payload: Any, error: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        decode_request(payload, CACHE_REQUESTS)
    assert error in str(err.value) and not isinstance(err.value, UnknownOp)


def test_unknown_op_is_named_and_default_op_applies() -> None:
    with pytest.raises(UnknownOp, match="unknown op 'frobnicate'"):
        decode_request({"op": "frobnicate"}, CACHE_REQUESTS)
    with pytest.raises(UnknownOp, match="unknown op 'sensor'"):
        decode_request({"op": "sensor", "imageName": "x", "sensor": "y"}, CACHE_REQUESTS)
    assert decode_request({"imageName": "x", "sensor": "y"}, COMPOSER_REQUESTS, default_op="sensor") == SensorRequest("x", "y")
    with pytest.raises(EnvelopeError, match="imageNames is not a list of text"):
        decode_request({"op": "recompose", "imageNames": "AT_O_20261125_000001"}, COMPOSER_REQUESTS)
    with pytest.raises(EnvelopeError, match="'since'"):
        ReplayRequest.decode({"op": "replay"})


def test_control_messages() -> None:
    assert Skipped("AT_O_20261125_000001", "why").encode() == {"imageName": "AT_O_20261125_000001", "reason": "why"}
    dup = Skipped("AT_O_20261125_000001", "again", duplicate=True)
    assert dup.encode() == {"imageName": "AT_O_20261125_000001", "reason": "again", "duplicate": True}
    assert Skipped.decode(dup.encode()) == dup
    assert Rejected("x/../y", 1, "bad name", "LATISS/rejected/a.json").encode() == {
        "imageName": "x/../y", "version": 1, "reason": "bad name", "path": "LATISS/rejected/a.json"}
    announced = {"imageName": "AT_O_20261125_000001", "version": 2, "path": "p", "url": "u", "md5": "m", "byteSize": 1}
    assert Acknowledgement.decode(announced) == Acknowledgement("AT_O_20261125_000001", 2)
    for bad, why in [({"imageName": "A"}, "'version'"), ({"imageName": "A", "version": float("inf")}, "not a number"),
                     ({"imageName": 5, "version": 1}, "imageName is not text"), ([1], "not an object")]:  # fmt: skip
        with pytest.raises(EnvelopeError, match=why):
            Acknowledgement.decode(bad)


def test_fault_and_warning_payloads() -> None:
    assert Fault(1, "disk full").encode() == {"code": 1, "report": "disk full"}
    assert OperatorWarning(8, "set aside").encode() == {"code": 8, "report": "set aside", "active": True}
    assert OperatorWarning.decode({"code": 1, "report": "over", "active": False}).active is False
    assert OperatorWarning.decode({"code": 1, "report": "still", "active": "no"}).active is True  # only false ends it
    for bad, why in [({"code": True, "report": "x"}, "is not an integer"), ({"code": 1.5, "report": "x"}, "is not an integer"),
                     ({"code": 1}, "'report'"), ("x", "not an object")]:  # fmt: skip
        with pytest.raises(EnvelopeError, match=why):
            Fault.decode(bad)
