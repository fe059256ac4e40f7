"""Replies typed in protocols/messages.py: each encodes the payload its receivers always read (same
keys, same order, so the same bytes), decodes what it encodes, and refuses a malformed answer with
the reason; the cache answers with them over its real ROUTER, and CacheClient.ask turns an answer
that is not the expected reply into CacheUnavailable."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import zmq

from protocols import salrecord
from protocols.config import load_instance, replace
from protocols.envelope import EnvelopeError, Sender, decode, encode_payload, split_identity
from protocols.messages import (
    Announced,
    CacheClient,
    CacheStatus,
    CacheUnavailable,
    CollectReply,
    CollectRequest,
    ComposerStatus,
    CscState,
    ErrorReply,
    LatestReply,
    LatestRequest,
    ProcessStatus,
    RangeReply,
    RangeRequest,
    Recomposed,
    RecomposeReply,
    RefillReply,
    ReplayReply,
    SensorReply,
    StatusRequest,
)
from tests.conftest import fresh_domain_and_offset

SAMPLE = {"component": "ESS", "topic": "airFlow", "salIndex": 301, "sndStamp": 10.0, "data": {"speed": 3.5}}

#: Each reply beside the payload the former hand-written dictionaries sent.
WIRE: list[tuple[Any, dict[str, Any]]] = [
    (ErrorReply("bad request: t0"), {"error": "bad request: t0"}),
    (CollectReply({"start": {"ESS.airFlow:301": SAMPLE}}, {"ESS.airFlow:301": [SAMPLE]}, True, [[1.0, 2.0]]),
     {"snapshots": {"start": {"ESS.airFlow:301": SAMPLE}}, "windows": {"ESS.airFlow:301": [SAMPLE]}, "caught_up": True,
      "outages": [[1.0, 2.0]]}),
    (CollectReply({}, {}, False), {"snapshots": {}, "windows": {}, "caught_up": False}),
    (RangeReply([SAMPLE]), {"samples": [SAMPLE]}),
    (LatestReply({"ESS.airFlow:301": SAMPLE, "ESS.other:0": None}), {"samples": {"ESS.airFlow:301": SAMPLE, "ESS.other:0": None}}),
    (CacheStatus([[1.0, 2.0]], {"samples": 3}, {"ESS.airFlow:301": 2}),
     {"outages": [[1.0, 2.0]], "counts": {"samples": 3}, "topics": {"ESS.airFlow:301": 2}}),
    (ReplayReply("listener.LATISS@h:1:0", 5, [("sal.ESS.airFlow", 5, "SFNSMQ==")]),
     {"sender": "listener.LATISS@h:1:0", "oldest": 5, "messages": [["sal.ESS.airFlow", 5, "SFNSMQ=="]]}),
    (RefillReply(12), {"published": 12}),
    (ComposerStatus({"composed": 1}, ["AT_O_20261124_000002"], {"AT_O_20261124_000001": [2, True]}, []),
     {"counts": {"composed": 1}, "open": ["AT_O_20261124_000002"], "done": {"AT_O_20261124_000001": [2, True]}, "unacked": []}),
    (RecomposeReply([Recomposed("AT_O_20261124_000001", 2, False), Recomposed("AT_O_20261124_000009", error="unknown image")]),
     {"results": [{"imageName": "AT_O_20261124_000001", "version": 2, "complete": False},
                  {"imageName": "AT_O_20261124_000009", "error": "unknown image"}]}),
    (SensorReply("R22_S11", ["SIMPLE  =                    T"], [{"name": "R22_S11/Segment10", "cards": []}], "MC_O_20261124_000001", 1),
     {"sensor": "R22_S11", "cards": ["SIMPLE  =                    T"], "segments": [{"name": "R22_S11/Segment10", "cards": []}],
      "imageName": "MC_O_20261124_000001", "version": 1}),
    (Announced("AT_O_20261124_000001", 2, "/a/AT_O_20261124_000001.fits", "http://127.0.0.1/a.fits", "0" * 32, 86400, True,
               1.5e9, "local", {"fits": {"path": "/a"}}),
     {"imageName": "AT_O_20261124_000001", "version": 2, "path": "/a/AT_O_20261124_000001.fits", "url": "http://127.0.0.1/a.fits",
      "md5": "0" * 32, "byteSize": 86400, "complete": True, "announced": 1.5e9, "annex": "local", "files": {"fits": {"path": "/a"}}}),
    (ProcessStatus({"composed": 4}, open=["AT_O_20261124_000005"], composed=4),
     {"counts": {"composed": 4}, "open": ["AT_O_20261124_000005"], "composed": 4}),
    (ProcessStatus({"announced": 4}, pending=0, unsynced=2), {"counts": {"announced": 4}, "pending": 0, "unsynced": 2}),
    (ProcessStatus({"samples": 9}, bad={"no magic byte": 2}), {"counts": {"samples": 9}, "bad": {"no magic byte": 2}}),
    (CscState("ENABLED", 2, "ATHeaderService", {"version": 3, "cards": {"OBSERVER": {"value": "Jane", "comment": ""}}}),
     {"state": "ENABLED", "stateCode": 2, "csc": "ATHeaderService",
      "overrides": {"version": 3, "cards": {"OBSERVER": {"value": "Jane", "comment": ""}}}}),
]  # fmt: skip


@pytest.mark.parametrize("reply, wire", WIRE, ids=lambda x: type(x).__name__)
def test_a_reply_encodes_the_same_bytes_and_decodes_back(reply: Any, wire: dict[str, Any]) -> None:
    assert encode_payload(reply.encode()) == encode_payload(wire)
    assert type(reply).decode(json.loads(encode_payload(wire))) == reply


MALFORMED: list[tuple[Any, Any, str]] = [
    (CollectReply, {"snapshots": [], "windows": {}}, "snapshots is not an object"),
    (CollectReply, {"snapshots": {"start": 3}, "windows": {}}, "snapshots of start is not an object"),
    (CollectReply, {"snapshots": {}, "windows": {}, "outages": [["a", 2]]}, "could not convert"),
    (RangeReply, {"samples": {"a": 1}}, "samples is not a list"),
    (RangeReply, "samples", "range reply is not an object"),
    (CacheStatus, {"counts": {"samples": "many"}}, "counts samples is not a number"),
    (ReplayReply, {"sender": "l", "oldest": 1, "messages": [["sal.X.y", 2]]}, r"not \[topic, seq, record\]"),
    (ReplayReply, {"sender": "l", "oldest": 1, "messages": [[7, 2, "x"]]}, "replayed topic is not text"),
    (ReplayReply, {"sender": "l", "oldest": True, "messages": []}, "oldest is not a number"),
    (RefillReply, {"published": "all"}, "published is not a number"),
    (RecomposeReply, {"results": [{"version": 1}]}, "'imageName'"),
    (SensorReply, {"sensor": "R22_S11", "cards": [1], "segments": [], "imageName": "x", "version": 1}, "cards is not a list of text"),
    (ErrorReply, {}, "'error'"),
    (Announced, {"imageName": "X", "version": 1, "path": "p", "url": "u", "md5": "m", "byteSize": "big"}, "byteSize is not a number"),
    (CscState, {"state": "ENABLED", "stateCode": "two"}, "stateCode is not a number"),
    (CscState, {"state": "ENABLED", "stateCode": 2, "overrides": {"cards": []}}, "override cards is not an object"),
    (CscState, {"stateCode": 2}, "without state/stateCode"),
    (ProcessStatus, {"open": []}, "'counts'"),
    (ProcessStatus, {"counts": {}, "pending": "some"}, "pending is not a number"),
    (ProcessStatus, {"counts": {}, "unsynced": [1]}, "unsynced is not a number"),
]


@pytest.mark.parametrize("kind, payload, reason", MALFORMED)
def test_a_malformed_reply_is_refused_with_its_reason(kind: Any, payload: Any, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        kind.decode(payload)


@pytest.fixture
def cache(cache_server: Any) -> Any:
    """The test's CacheServer (conftest ``cache_server``) holding two ESS.airFlow samples, at 10 and 20 s."""
    sender = Sender("listener.LATISS@test:1:0")
    for t, speed in ((10.0, 3.5), (20.0, 4.5)):
        sample = {"component": "ESS", "topic": "airFlow", "salIndex": 301, "sndStamp": t, "srcStamp": None, "rcvStamp": t,
                  "data": {"speed": speed, "private_sndStamp": t}}  # fmt: skip
        cache_server.on_sample(sender.frames("sal.ESS.airFlow", salrecord.encode_sample("ESS", "airFlow", sample)))
    return cache_server


def ask_cache(server: Any, payload: dict[str, Any], topic: str) -> tuple[str, Any]:
    """One request to the cache's ROUTER from a REQ socket, the cache serving it in this thread."""
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(server.cfg.endpoints.cache_router)
    try:
        req.send_multipart(Sender("composer.LATISS@test:2:0").frames(topic, payload))
        assert server.router.poll(5000)
        server.on_request(server.router.recv_multipart())
        assert req.poll(5000)
        msg = decode(req.recv_multipart())
        return msg.topic, msg.payload
    finally:
        req.close()


def test_the_cache_answers_with_typed_replies(cache: Any) -> None:
    topic, payload = ask_cache(cache, CollectRequest({"start": 15.0}, {"start": ["ESS.airFlow:301"]}).encode(), "ctl.request.collect")
    reply = CollectReply.decode(payload)
    assert topic == "ctl.reply.collect" and reply.caught_up and reply.outages == []
    assert reply.snapshots["start"]["ESS.airFlow:301"]["data"]["speed"] == 3.5
    topic, payload = ask_cache(cache, RangeRequest("ESS.airFlow:301", 0.0, 30.0).encode(), "ctl.request.range")
    assert topic == "ctl.reply.range" and [s["sndStamp"] for s in RangeReply.decode(payload).samples] == [10.0, 20.0]
    topic, payload = ask_cache(cache, LatestRequest(["ESS.airFlow:301", "ESS.nothing:0"]).encode(), "ctl.request.latest")
    latest = LatestReply.decode(payload).samples
    assert topic == "ctl.reply.latest" and latest["ESS.airFlow:301"]["sndStamp"] == 20.0 and latest["ESS.nothing:0"] is None
    topic, payload = ask_cache(cache, StatusRequest().encode(), "ctl.request.status")
    status = CacheStatus.decode(payload)
    assert topic == "ctl.reply.status" and status.counts["samples"] == 2 and status.topics == {"ESS.airFlow:301": 2}
    topic, payload = ask_cache(cache, {"op": "explode"}, "ctl.request.explode")
    assert topic == "ctl.reply.explode" and ErrorReply.decode(payload).error == "unknown op 'explode'"
    topic, payload = ask_cache(cache, {"op": "range", "key": "ESS.airFlow:301", "t0": "soon", "t1": 1.0}, "ctl.request.range")
    assert topic == "ctl.reply.error" and ErrorReply.decode(payload).error.startswith("bad request: ")


def test_an_answer_that_is_not_the_reply_asked_for_is_cache_unavailable() -> None:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    answers = [{"samples": "not a list"}, {"error": "no such key"}]

    def serve() -> None:
        for body in answers:
            if not router.poll(5000):
                return
            ident, _ = split_identity(router.recv_multipart())
            router.send_multipart(ident + Sender("cache.LATISS@test:3:0").frames("ctl.reply.range", body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = CacheClient(f"tcp://127.0.0.1:{port}", Sender("composer.LATISS@test:4:0"), timeout_s=5.0)
    try:
        with pytest.raises(CacheUnavailable, match="unreadable answer from the cache: samples is not a list"):
            client.ask(RangeRequest("ESS.airFlow:301", 0.0, 1.0), RangeReply)
        with pytest.raises(CacheUnavailable, match="cache refused the request: no such key"):
            client.ask(RangeRequest("ESS.airFlow:301", 0.0, 1.0), RangeReply)
    finally:
        thread.join(5)
        client.close()
        router.close()


def test_the_state_message_of_the_csc_is_the_typed_one() -> None:
    from protocols.csc_state import State, empty_overrides, state_payload

    payload = state_payload(State.DISABLED, empty_overrides(), "ATHeaderService")
    assert CscState.decode(payload) == CscState("DISABLED", int(State.DISABLED), "ATHeaderService", empty_overrides())
    assert list(payload) == ["state", "stateCode", "csc", "overrides"]


def test_a_state_message_with_a_bad_state_code_is_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, ``{"state": "ENABLED", "stateCode": "two"}`` was applied and ``state_code`` then raised."""
    import time

    from protocols.csc_state import CscStateFollower, state_pub_endpoint, state_topic

    for k in ("HS_PORT_OFFSET", "HS_DDS_DOMAIN"):
        monkeypatch.delenv(k, raising=False)
    _, offset = fresh_domain_and_offset()
    cfg = replace(load_instance("LATISS"), port_base=5550 + offset + 10)
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(state_pub_endpoint(cfg))
    follower = CscStateFollower(cfg, role="test")
    sender = Sender("csc.LATISS@test:5:0")
    try:
        deadline = time.monotonic() + 10
        while follower.bad_messages == 0 and time.monotonic() < deadline:  # until the subscription is through
            pub.send_multipart(sender.frames(state_topic(cfg.instrument), {"state": "ENABLED", "stateCode": "two", "overrides": {}}))
            time.sleep(0.05)
            follower.poll()
        assert follower.bad_messages >= 1
        assert follower.state == CscStateFollower.UNKNOWN and follower.state_code is None and not follower.enabled
        pub.send_multipart(sender.frames(state_topic(cfg.instrument), CscState("ENABLED", 2, "ATHeaderService", {"version": 1, "cards": {}}).encode()))
        deadline = time.monotonic() + 10
        while not follower.poll() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert follower.enabled and follower.state_code == 2 and follower.overrides_version == 1
    finally:
        follower.close()
        pub.close()
