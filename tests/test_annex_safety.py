"""The annex against hostile names and an unwritable disk (issue 12, items 2 and 4).

- Names from outside (imageName, DAYOBS from ``startIntegration.imageDate`` or a header PUSHed to
  the publisher) never put a file outside the annex: one shared definition checks them, the
  resolved path is checked again, and a header that can never be written is set aside in
  ``<instrument>/rejected/`` with its reason, acknowledged as rejected, never retried forever.
- An unwritable annex costs no header: the publisher keeps what it cannot write, warns the
  operators through the CSC (which stays ENABLED: errorCode and logMessage, errorCode 0 when it is
  over), and writes and announces everything once the annex is back.

The publisher runs in this process on real sockets (ZeroMQ PULL/PUB, DDS on loopback, its HTTP
server); the CSC runs as supervisord runs it (tests/test_csc.py's harness).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq

from header.compose import ExposureInputs, Templates, compose_header
from procs.publisher import Publisher, SetAside, annex_relpath
from protocols.config import load_instance, load_keyword_map, load_template
from protocols.csc_state import ErrorCode, warning_frames
from protocols.envelope import Sender, decode, sender_id, tai_now
from protocols.names import BadName, dayobs_problem, image_name_problem, inside
from tests.conftest import fresh_domain_and_offset
from tests.plain_dds import PlainReader
from tools.catchup import Exposure, read_set_aside
from tests.test_csc import ENABLED, SalClient, codes, csc_env  # noqa: F401 (csc_env is a fixture)

GOOD = "AT_O_20261125_000001"
T0 = 1795575906.0  # 2026-11-25T03:04:06 TAI


# -- pure: one definition of the names that become paths ----------------------------------------


def test_one_image_name_pattern_for_composer_and_publisher() -> None:
    import procs.composer
    import procs.publisher
    import protocols.names

    assert procs.composer.IMAGE_NAME is protocols.names.IMAGE_NAME
    assert not hasattr(procs.publisher, "IMAGE_NAME") or procs.publisher.IMAGE_NAME is protocols.names.IMAGE_NAME


@pytest.mark.parametrize(
    "name", ["../../../../tmp/x", "a/b", "..", "a..b", ".hidden", "x" * 65, "AT\x00", "", "Étoile", 12]
)
def test_bad_image_names(name: object) -> None:
    assert image_name_problem(name)
    with pytest.raises(SetAside):
        annex_relpath("LATISS", "20261125", name)


@pytest.mark.parametrize(
    ("dayobs", "why"),
    [("../../../../tmp/x", "8 digits"), ("2026112", "8 digits"), ("20261125/..", "8 digits"),
     ("20261325", "calendar date"), ("20260230", "calendar date"), ("9" * 300, "8 digits"), (None, "8 digits")],
)  # fmt: skip
def test_bad_dayobs(dayobs: object, why: str) -> None:
    problem = dayobs_problem(dayobs)
    assert problem and why in problem
    with pytest.raises(SetAside, match="DAYOBS"):
        annex_relpath("LATISS", dayobs, GOOD)


def test_good_names_make_the_standard_path() -> None:
    assert annex_relpath("LATISS", "20261125", GOOD) == f"LATISS/20261125/{GOOD}.fits"
    assert annex_relpath("LATISS", 20261125, GOOD) == f"LATISS/20261125/{GOOD}.fits"


def test_resolved_path_stays_under_the_annex(tmp_path: Path) -> None:
    annex = tmp_path / "annex"
    (annex / "LATISS").mkdir(parents=True)
    (annex / "LATISS" / "20261125").symlink_to(tmp_path)  # a link planted in the annex
    with pytest.raises(BadName, match="leaves the annex"):
        inside(annex, f"LATISS/20261125/{GOOD}.fits")
    assert inside(annex, f"LATISS/20261126/{GOOD}.fits") == annex.resolve() / "LATISS" / "20261126" / f"{GOOD}.fits"


def test_hostile_image_date_never_becomes_the_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_ANNEX", "HS_STATE_DIR"):
        monkeypatch.delenv(k, raising=False)
    cfg = load_instance("LATISS")
    start = {"component": "ATCamera", "topic": "startIntegration", "salIndex": 0, "sndStamp": T0,
             "data": {"imageName": GOOD, "imageDate": "../../../../tmp/x", "exposureTime": 2.0}}  # fmt: skip
    inputs = ExposureInputs(GOOD, {"startIntegration": start}, {"start": T0}, {})
    templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
    header = compose_header(cfg, load_keyword_map(cfg), templates, inputs, T0 + 10.0)
    assert header.dayobs == "20261124"  # TAI - 12 h of the exposure, not the camera's text
    assert annex_relpath("LATISS", header.dayobs, GOOD) == f"LATISS/20261124/{GOOD}.fits"


# -- the publisher on real sockets ---------------------------------------------------------------


def header_payload(cfg: Any, image: str = GOOD, version: int = 1, dayobs: str = "20261125") -> dict[str, Any]:
    templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
    h = compose_header(cfg, load_keyword_map(cfg), templates, ExposureInputs(image, {}, {}, {}), tai_now(), version)
    payload = json.loads(h.payload_json())
    payload["dayobs"] = dayobs
    return payload


class RunningPublisher:
    """hs-publisher's loop in a thread, with a PUSH socket feeding it and a SUB socket on its PUB."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.pub = Publisher(cfg)
        self.requested = False
        self.thread = threading.Thread(target=self.pub.run, args=(self,), daemon=True)
        ctx = zmq.Context.instance()
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(cfg.endpoints.publisher_pull)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        for prefix in (b"ctl.announced.", b"ctl.rejected.", b"ctl.warning.", b"ctl.status.publisher."):
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        self.sub.connect(cfg.endpoints.publisher_pub)
        self.sender = Sender(sender_id("composer", cfg.instrument))
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.thread.start()
        time.sleep(0.3)  # subscription reaches the publisher

    def send(self, payload: dict[str, Any]) -> None:
        self.push.send_multipart(self.sender.frames(f"hdr.{self.cfg.instrument}.{payload['imageName']}", payload))

    def wait(self, topic_prefix: str, pred=lambda p: True, timeout: float = 20.0) -> dict[str, Any]:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while True:
            for t, p in self.seen:
                if t.startswith(topic_prefix) and pred(p):
                    return p
            assert time.monotonic() < deadline, f"no {topic_prefix} message; seen: {[(t, p) for t, p in self.seen][-5:]}"
            if self.sub.poll(100):
                msg = decode(self.sub.recv_multipart())
                self.seen.append((msg.topic, msg.payload))

    def gather(self, seconds: float) -> None:
        """Everything the publisher says for ``seconds`` (into :attr:`seen`)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.sub.poll(max(1, int(left * 1000))):
                msg = decode(self.sub.recv_multipart())
                self.seen.append((msg.topic, msg.payload))

    def close(self) -> None:
        self.requested = True
        self.thread.join(10)
        self.pub.http.server_close()
        for s in (self.push, self.sub, self.pub.pull, self.pub.pub):
            s.close(linger=0)


@pytest.fixture
def publisher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningPublisher]:
    domain, offset = fresh_domain_and_offset()
    monkeypatch.setenv("HS_DDS_DOMAIN", str(domain))
    monkeypatch.setenv("HS_PORT_OFFSET", str(offset))
    monkeypatch.setenv("HS_ANNEX", str(tmp_path / "annex"))
    monkeypatch.setenv("HS_STATE_DIR", str(tmp_path / "state"))
    rp = RunningPublisher(load_instance("LATISS"))
    rp.reader = PlainReader(domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
    yield rp
    rp.close()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_pushed_header_with_traversal_dayobs_is_set_aside(publisher: RunningPublisher, tmp_path: Path) -> None:
    annex = tmp_path / "annex"
    bad = header_payload(publisher.cfg, dayobs="../../../../../../../../../../tmp/" + tmp_path.name + "/x")
    publisher.send(bad)
    rej = publisher.wait("ctl.rejected.", lambda p: p["imageName"] == GOOD)
    assert "DAYOBS" in rej["reason"] and "8 digits" in rej["reason"] and rej["version"] == 1
    assert rej["path"] == f"LATISS/rejected/{GOOD}.v1.json"
    kept = json.loads((annex / rej["path"]).read_text())
    assert kept["reason"] == rej["reason"] and kept["payload"]["hdus"] == bad["hdus"]  # the header is not lost
    assert files_under(tmp_path) - {f"annex/{f}" for f in files_under(annex)} == set(), "a file outside the annex"
    warn = publisher.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.HEADER_SET_ASIDE)
    assert GOOD in warn["report"] and "DAYOBS" in warn["report"]
    # visible to hs-catchup list
    aside = read_set_aside(publisher.cfg)
    assert aside[GOOD]["reason"] == rej["reason"] and aside[GOOD]["version"] == 1
    assert Exposure(GOOD, T0, None, None, aside[GOOD]["reason"]).status == f"SET ASIDE: {rej['reason']}"
    # the same header again (the composer resends until acknowledged): rejected again, not rewritten
    publisher.send(bad)
    time.sleep(0.5)
    # a good header after it is written and announced as usual
    publisher.send(header_payload(publisher.cfg, image="AT_O_20261125_000002"))
    ann = publisher.wait("ctl.announced.", lambda p: p["imageName"] == "AT_O_20261125_000002")
    assert ann["path"] == "LATISS/20261125/AT_O_20261125_000002.fits"
    got = publisher.reader.wait(lambda s: any(x["id"] == "AT_O_20261125_000002" for x in s), 10)
    assert {x["id"] for x in got} == {"AT_O_20261125_000002"}, "a set-aside header was announced"
    assert publisher.pub.pending == []


@pytest.mark.parametrize("image", ["../../../../tmp/evil", "a" * 300, "ok/../../x"])
def test_pushed_header_with_bad_image_name_is_set_aside(publisher: RunningPublisher, tmp_path: Path, image: str) -> None:
    publisher.send(header_payload(publisher.cfg, image=image))
    rej = publisher.wait("ctl.rejected.", lambda p: p["imageName"] == image)
    assert "imageName" in rej["reason"]
    name = Path(rej["path"]).name
    assert name.startswith("invalid-") and (tmp_path / "annex" / rej["path"]).is_file()
    assert all(p.startswith("annex/") or p.startswith("state/") for p in files_under(tmp_path))


def test_never_writable_header_is_set_aside_not_retried(publisher: RunningPublisher) -> None:
    """A 300-character DAYOBS ('File name too long' on disk) is rejected once with its reason."""
    publisher.send(header_payload(publisher.cfg, dayobs="2" * 300))
    rej = publisher.wait("ctl.rejected.", lambda p: p["imageName"] == GOOD)
    assert "8 digits" in rej["reason"]
    assert publisher.pub.pending == [] and publisher.pub.unwritable is None
    assert publisher.pub.counts["write_errors"] == 0


def test_unwritable_annex_keeps_headers_and_announces_them_when_back(publisher: RunningPublisher, tmp_path: Path) -> None:
    day = tmp_path / "annex" / "LATISS" / "20261125"
    day.parent.mkdir(parents=True, exist_ok=True)
    day.write_text("not a folder\n")  # the DAYOBS folder cannot be made (also for root)
    names = [f"AT_O_20261125_00000{i}" for i in (1, 2, 3)]
    for n in names:
        publisher.send(header_payload(publisher.cfg, image=n))
    warn = publisher.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.ANNEX_UNWRITABLE and p["active"])
    assert "unwritable" in warn["report"] and "kept" in warn["report"]
    deadline = time.monotonic() + 10
    while len(publisher.pub.pending) < 3:
        assert time.monotonic() < deadline, publisher.pub.pending
        time.sleep(0.1)
    assert not any(t.startswith("ctl.announced.") or t.startswith("ctl.rejected.") for t, _ in publisher.seen)
    day.unlink()  # the annex is back
    for n in names:
        ann = publisher.wait("ctl.announced.", lambda p, n=n: p["imageName"] == n)
        data = (tmp_path / "annex" / ann["path"]).read_bytes()
        assert hashlib.md5(data).hexdigest() == ann["md5"]
    over = publisher.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.ANNEX_UNWRITABLE and not p["active"])
    assert "writable again" in over["report"]
    got = publisher.reader.wait(lambda s: {x["id"] for x in s} >= set(names), 10)
    assert sorted(x["id"] for x in got) == names  # each announced once
    assert publisher.pub.pending == []


# -- the CSC: warned, not faulted ----------------------------------------------------------------


def test_csc_stays_enabled_and_warns_while_the_annex_is_unwritable(csc_env) -> None:  # noqa: ANN001, F811
    cfg = csc_env.cfg
    client = SalClient(cfg.dds_domain)
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(cfg.endpoints.publisher_pub)  # stands in for hs-publisher's PUB socket
    sender = Sender(sender_id("publisher", cfg.instrument))
    report = "annex /a unwritable (No space left on device): headers are kept and retried every 5 s"
    csc_env.start()
    try:
        client.wait_state(5, timeout=20)
        assert codes(client.command("start", configurationOverride="")) == [301, 303]
        assert codes(client.command("enable")) == [301, 303]
        deadline = time.monotonic() + 10
        def has_error(code: int) -> bool:
            client.poll()
            return any(e["errorCode"] == code for e in client.events["errorCode"])

        while not has_error(1):
            assert time.monotonic() < deadline, f"no errorCode\n{csc_env.log()}"
            pub.send_multipart(warning_frames(sender, cfg.instrument, ErrorCode.ANNEX_UNWRITABLE, report))
            time.sleep(0.2)
        for _ in range(5):  # repeated every retry cycle while it lasts: one errorCode, not one per message
            pub.send_multipart(warning_frames(sender, cfg.instrument, ErrorCode.ANNEX_UNWRITABLE, report))
            time.sleep(0.1)
        err = client.wait_event("errorCode", lambda e: e["errorCode"] == 1)
        assert report in err["errorReport"] and "publisher" in err["errorReport"]
        msg = client.wait_event("logMessage", lambda e: report in e["message"])
        assert msg["level"] == 30  # WARNING
        pub.send_multipart(warning_frames(sender, cfg.instrument, ErrorCode.ANNEX_UNWRITABLE, "annex /a writable again", active=False))
        cleared = client.wait_event("errorCode", lambda e: e["errorCode"] == 0)
        assert "writable again" in cleared["errorReport"]
        client.poll()
        assert [e["errorCode"] for e in client.events["errorCode"]] == [1, 0]
        assert client.states()[-1] == ENABLED  # never FAULT: exposures keep being composed
        assert 3 not in client.states()
    finally:
        pub.close(linger=0)


def test_kept_headers_survive_a_publisher_restart(publisher: RunningPublisher, tmp_path: Path) -> None:
    """Headers kept during an outage are spooled in the state folder: a restarted publisher writes
    and announces them without anyone sending them again."""
    day = tmp_path / "annex" / "LATISS" / "20261125"
    day.parent.mkdir(parents=True, exist_ok=True)
    day.write_text("not a folder\n")
    names = ["AT_O_20261125_000005", "AT_O_20261125_000006"]
    for n in names:
        publisher.send(header_payload(publisher.cfg, image=n))
    spool = tmp_path / "state" / "LATISS" / "publisher-spool"
    spooled = lambda: sorted(p.name for p in spool.glob("*.json"))  # noqa: E731 (temporary files aside)
    deadline = time.monotonic() + 10
    while len(publisher.pub.pending) < 2 or len(spooled()) < 2:
        assert time.monotonic() < deadline, (publisher.pub.pending, spooled())
        time.sleep(0.1)
    assert spooled() == [f"{n}.v1.json" for n in names]
    publisher.close()  # killed with the headers kept; nobody resends them
    day.unlink()
    deadline = time.monotonic() + 10
    while True:  # ZeroMQ releases the closed sockets' ports asynchronously
        try:
            again = RunningPublisher(publisher.cfg)
            break
        except zmq.ZMQError:
            assert time.monotonic() < deadline, "the first publisher's ports were never released"
            time.sleep(0.2)
    try:
        for n in names:
            ann = again.wait("ctl.announced.", lambda p, n=n: p["imageName"] == n)
            assert hashlib.md5((tmp_path / "annex" / ann["path"]).read_bytes()).hexdigest() == ann["md5"]
        got = publisher.reader.wait(lambda s: {x["id"] for x in s} >= set(names), 10)
        assert sorted(x["id"] for x in got) == names
        deadline = time.monotonic() + 10
        while spooled():  # removed right after each acknowledgement
            assert time.monotonic() < deadline, spooled()
            time.sleep(0.05)
        assert again.pub.pending == []
    finally:
        again.close()


# -- durability off the announcement path --------------------------------------------------------


def hold_commit(publisher: RunningPublisher, image: str) -> tuple[threading.Event, threading.Event]:
    """The annex's fsync of ``image`` waits until released (a disk busy with other writers):
    (reached, release)."""
    reached, release = threading.Event(), threading.Event()
    commit = publisher.pub.annex.commit

    def held_commit(loc: str) -> None:
        if image in loc:
            reached.set()
            assert release.wait(20), "disk never released"
        commit(loc)

    publisher.pub.annex.commit = held_commit  # type: ignore[method-assign]
    return reached, release


def test_header_is_announced_while_the_previous_one_is_made_durable(publisher: RunningPublisher, tmp_path: Path) -> None:
    """The fsyncs after an announcement (up to 60 ms on a shared disk) once held the next header;
    now they run on the durability thread and the acknowledgement waits for them, not the next header."""
    first, second = "AT_O_20261125_000001", "AT_O_20261125_000002"
    reached, release = hold_commit(publisher, first)
    publisher.send(header_payload(publisher.cfg, image=first))
    assert reached.wait(10), "the first header was never made durable"
    publisher.send(header_payload(publisher.cfg, image=second))
    got = publisher.reader.wait(lambda s: {x["id"] for x in s} == {first, second}, 10)
    assert sorted(x["id"] for x in got) == [first, second]  # announced although the disk is held
    publisher.gather(0.5)
    assert not any(t.startswith("ctl.announced.") for t, _ in publisher.seen), "acknowledged before durable"
    status = publisher.wait("ctl.status.publisher.", lambda p: p.get("unsynced") == 2, timeout=5)  # what operators see
    assert status["pending"] == 0 and status["counts"].get("announced", 0) == 0
    index = [json.loads(line) for line in (tmp_path / "annex" / "LATISS" / "index.jsonl").read_text().splitlines()]
    assert [(e["imageName"], e["announced"]) for e in index] == [(first, None), (second, None)]
    publisher.send(header_payload(publisher.cfg, image=first))  # the composer's resend meanwhile
    time.sleep(0.3)
    release.set()
    acks = [publisher.wait("ctl.announced.", lambda p, n=n: p["imageName"] == n) for n in (first, second)]
    assert all(a["announced"] is not None for a in acks)
    order = [p["imageName"] for t, p in publisher.seen if t.startswith("ctl.announced.")]
    assert order[:2] == [first, second]
    announced = {e["imageName"]: e for e in map(json.loads, (tmp_path / "annex" / "LATISS" / "index.jsonl").read_text().splitlines())}
    assert {n: e["announced"] is not None for n, e in announced.items()} == {first: True, second: True}
    assert (tmp_path / "annex" / "LATISS" / "20261125" / f"{first}.prov.json").is_file()
    time.sleep(0.5)
    assert sorted(x["id"] for x in publisher.reader.poll()) == [first, second], "the resent header was announced twice"
    assert publisher.pub.counts["duplicates"] == 1 and publisher.pub.counts["announced"] == 2
    publisher.wait("ctl.status.publisher.", lambda p: p.get("unsynced") == 0 and p["counts"].get("announced") == 2, timeout=5)


def test_header_whose_fsync_fails_is_kept_and_announced_again(publisher: RunningPublisher, tmp_path: Path) -> None:
    image = "AT_O_20261125_000001"
    commit = publisher.pub.annex.commit
    failures = []

    def failing_commit(loc: str) -> None:
        if not failures:
            failures.append(loc)
            raise OSError(5, "Input/output error")
        commit(loc)

    publisher.pub.annex.commit = failing_commit  # type: ignore[method-assign]
    publisher.send(header_payload(publisher.cfg, image=image))
    warn = publisher.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.ANNEX_UNWRITABLE and p["active"])
    assert "Input/output error" in warn["report"]
    ann = publisher.wait("ctl.announced.", lambda p: p["imageName"] == image, timeout=20)  # the retry cycle
    assert ann["announced"] is not None and publisher.pub.counts["write_errors"] == 1
    assert hashlib.md5((tmp_path / "annex" / ann["path"]).read_bytes()).hexdigest() == ann["md5"]
    publisher.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.ANNEX_UNWRITABLE and not p["active"])
    assert publisher.pub.pending == [] and not list((tmp_path / "state").rglob("publisher-spool/*.json"))
