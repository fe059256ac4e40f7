"""hs-tap: message summaries, rate statistics, and the command against a real socket."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protocols import salrecord
import zmq

from header.cards import format_card, structural_primary
from protocols.envelope import Envelope, Message, SeqStatus, Sender
from tools import tap

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_717_200_000.25  # 2024-06-01 00:00:00.250 (TAI)


def msg(topic: str, payload, seq: int = 1, sender: str = "listener.LATISS@host:1:0.000", t: float = T0) -> Message:
    return Message(topic, Envelope(1, seq, t, sender), payload)


SAL = {
    "component": "ATCamera",
    "topic": "startIntegration",
    "salIndex": 0,
    "sndStamp": 1717200000.123456,
    "srcStamp": None,
    "rcvStamp": 1717200000.2,
    "data": {
        "private_sndStamp": 1717200000.123456,
        "private_seqNum": 3,
        "imageName": "AT_O_20240601_000001",
        "imageIndex": 1,
        "exposureTime": 30.0,
        "timeout": float("nan"),
        "imagesInSequence": 1,
        "additionalKeys": "a:b:c",
    },
}

HDR = {
    "imageName": "AT_O_20240601_000001",
    "instrument": "LATISS",
    "version": 2,
    "complete": False,
    "reasons": ["DOMEAZ: stale"],
    "hdus": [
        {"name": "PRIMARY", "cards": structural_primary() + format_card("OBJECT", "x")},
        {"name": "R00_S00", "cards": format_card("CCDSLOT", "S00")},
    ],
}


def test_summarize_sal():
    line = tap.summarize(msg("sal.ATCamera.startIntegration", SAL, seq=12))
    assert line.startswith("00:00:00.250 sal.ATCamera.startIntegration #12 listener.LATISS | ")
    assert "salIndex=0" in line and "sndStamp=1717200000.123" in line
    assert "imageName='AT_O_20240601_000001'" in line and "exposureTime=30" in line
    assert "private_" not in line  # the SAL bookkeeping fields are not shown
    assert "(+2 fields)" in line  # only a few fields
    assert "\n" not in line


def test_summarize_hdr():
    line = tap.summarize(msg("hdr.LATISS.AT_O_20240601_000001", HDR, sender="composer.LATISS@h:2:0.0"))
    assert "composer.LATISS" in line
    assert "imageName=AT_O_20240601_000001 version=2 complete=False hdus=2 cards=6" in line
    assert "reasons=1" in line


def test_summarize_ctl_and_others():
    ann = {"imageName": "X", "version": 1, "path": "/a/b", "url": "http://x", "md5": "0", "byteSize": 5}
    line = tap.summarize(msg("ctl.announced.X", ann, sender="publisher.LATISS@h:3:0.0"))
    assert line.endswith("| keys: imageName, version, path, url, md5, byteSize")
    assert tap.summarize(msg("ctl.status.listener", {})).endswith("| {}")
    assert tap.summarize(msg("other.thing", [1, 2, 3, 4, 5])).endswith("| [1,2,3,…](5)")


@pytest.mark.parametrize("payload", [None, 3, "text", [], {"hdus": 5}, {"hdus": [5, {"cards": None}]}, {"data": 7}])
@pytest.mark.parametrize("topic", ["sal.A.b", "hdr.LATISS.X", "ctl.x"])
def test_summarize_never_fails_on_odd_payloads(topic, payload):
    assert topic in tap.summarize(msg(topic, payload))


def test_summarize_flags_gaps_and_restarts():
    line = tap.summarize(msg("sal.A.b", SAL), SeqStatus(gap=4, restarted=True))
    assert "[GAP: 4 lost]" in line and "[sender restarted]" in line


def test_json_record_is_strict_json():
    rec = tap.json_record(msg("sal.ATCamera.startIntegration", SAL, seq=5), SeqStatus(gap=1), full=True)
    text = json.dumps(rec, allow_nan=False)  # NaN in the payload became a string
    back = json.loads(text)
    assert back["topic"] == "sal.ATCamera.startIntegration" and back["seq"] == 5 and back["gap"] == 1
    assert back["sender"] == "listener.LATISS@host:1:0.000" and back["sent"] == T0
    assert back["payload"]["data"]["timeout"] == "NaN"
    assert "summary" in back
    assert "payload" not in tap.json_record(msg("ctl.x", {}))


def test_full_text_shows_cards():
    text = tap.full_text(msg("hdr.LATISS.X", HDR))
    assert "--- HDU 1 R00_S00" in text and format_card("CCDSLOT", "S00")[0].rstrip() in text


def test_format_error():
    line = tap.format_error("expected 3 frames", [b"garbage"], T0)
    assert line.startswith("00:00:00.250 ERROR malformed message (1 frames, frame 0 b'garbage')")
    assert line.endswith("expected 3 frames")


def test_rate_stats_rates_gaps_restarts():
    st = tap.RateStats(start=100.0)
    a = "listener.LATISS@h:1:0.0"
    for seq in range(1, 11):
        st.record(msg("sal.A.x", {}, seq=seq, sender=a))
    for seq in range(11, 16):
        st.record(msg("sal.A.y", {}, seq=seq, sender=a))
    assert st.rates(102.0) == {"sal.A.x": 5.0, "sal.A.y": 2.5}
    report = st.report(102.0)
    assert "7.5 msg/s" in report and "gaps 0 restarts 0" in report
    # a new interval: rates restart, totals keep counting
    s = st.record(msg("sal.A.x", {}, seq=19, sender=a))  # 16..18 lost
    assert s.gap == 3
    s = st.record(msg("sal.A.x", {}, seq=1, sender="listener.LATISS@h:99:5.0"))  # restarted listener
    assert s.restarted and s.gap == 0
    assert st.rates(103.0) == {"sal.A.x": 2.0, "sal.A.y": 0.0}
    assert (st.gaps, st.restarts) == (3, 1)
    assert st.gaps_by_sender == {"listener.LATISS": 3}
    assert st.totals == {"sal.A.x": 12, "sal.A.y": 5}
    st.record_malformed("expected 3 frames (topic, envelope, payload), got 1")
    st.record_malformed("expected 3 frames (topic, envelope, payload), got 2")
    report = st.report(103.0)
    assert "gaps 3 restarts 1" in report and "malformed 2" in report and "listener.LATISS: 3 lost, 1 restarts" in report
    summary = st.summary(110.0)
    assert "17 messages in 10.0 s, 2 malformed" in summary
    assert "gaps: 3 messages lost, 1 sender restarts" in summary
    assert "sal.A.x  12" in summary


def test_rate_stats_without_gap_tracking():
    st = tap.RateStats(start=0.0, track_gaps=False)
    st.record(msg("sal.A.x", {}, seq=1))
    assert st.record(msg("sal.A.x", {}, seq=50)).gap == 0
    assert st.gaps == 0
    assert "not tracked" in st.summary(1.0)
    assert "gaps n/a" in st.report(1.0)


def test_resolve_endpoints():
    args = tap.build_parser().parse_args(["127.0.0.1:7000", "ipc:///tmp/x", "--instance", "LATISS"])
    eps = tap.resolve_endpoints(args)
    assert eps[:2] == ["tcp://127.0.0.1:7000", "ipc:///tmp/x"]
    from protocols.config import load_instance

    e = load_instance("LATISS").endpoints
    assert eps[2:] == [e.listener_pub, e.composer_pub, e.publisher_pub]


def test_usage_errors():
    with pytest.raises(SystemExit) as exc:
        tap.main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        tap.main(["--instance", "NoSuchCamera"])
    with pytest.raises(SystemExit):
        tap.main(["tcp://127.0.0.1:1", "--stats", "--full"])


def _run_tap_against(frames_to_send: list[list[bytes]], *extra: str) -> subprocess.CompletedProcess:
    """Run ``python -m tools.tap`` against a real socket that sends ``frames_to_send``.

    The socket is an XPUB (a PUB socket that also reports subscriptions) so the test sends only once
    the tap's subscription has arrived: a plain PUB drops what it sends before that.
    """
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 1000)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.tap", endpoint, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert pub.poll(15000), "the tap never subscribed"
        pub.recv()  # the subscription message
        for frames in frames_to_send:
            pub.send_multipart(frames)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pub.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_tap_command_shows_messages_and_malformed():
    sender = Sender("listener.LATISS@test:1:0.000")
    good1 = sender.frames("sal.ATCamera.startIntegration", salrecord.encode_sample("ATCamera", "startIntegration", SAL))
    good2 = Sender("composer.LATISS@test:2:0.000").frames("hdr.LATISS.AT_O_20240601_000001", HDR)
    garbage = [b"sal.ATCamera.x", b"\xff\xfe not an envelope", b"{}"]
    res = _run_tap_against([good1, garbage, good2], "--count", "3", "--timeout", "10")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3, res.stdout
    assert "sal.ATCamera.startIntegration #1 listener.LATISS | salIndex=0" in lines[0]
    assert "ERROR malformed message (3 frames" in lines[1] and "malformed envelope frame" in lines[1]
    assert "hdr.LATISS.AT_O_20240601_000001 #1 composer.LATISS | imageName=AT_O_20240601_000001" in lines[2]
    # exit summary on stderr
    assert "2 messages" in res.stderr and "1 malformed" in res.stderr
    assert re.search(r"^  sal\.ATCamera\.startIntegration +1$", res.stderr, re.M)
    assert re.search(r"^  hdr\.LATISS\.AT_O_20240601_000001 +1$", res.stderr, re.M)


def test_tap_command_json_mode():
    sender = Sender("listener.LATISS@test:1:0.000")
    frames = [sender.frames("sal.ATCamera.startIntegration", salrecord.encode_sample("ATCamera", "startIntegration", SAL)), [b"only one frame"]]
    res = _run_tap_against(frames, "--count", "2", "--timeout", "10", "--json")
    assert res.returncode == 0, res.stderr
    objs = [json.loads(line) for line in res.stdout.splitlines()]
    assert objs[0]["topic"] == "sal.ATCamera.startIntegration" and objs[0]["seq"] == 1
    assert "expected 3 frames" in objs[1]["error"] and objs[1]["frames"] == 1


def test_tap_command_times_out_short_of_count():
    res = _run_tap_against([], "--count", "1", "--timeout", "0.5")
    assert res.returncode == 1
    assert "0 messages" in res.stderr
