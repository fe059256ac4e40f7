"""hs-csc, the SAL CSC of an instance, driven as the observatory drives any CSC.

hs-csc runs as a subprocess with the environment supervisord gives it (tools.runner.Deployment).
It is commanded by an independent SAL client whose DDS types are built straight from
protocols/sal_topics.yaml (ackcmd from the SAL generic definition in header-facts.md) without any
of the project's DDS code. The ZeroMQ side is checked with protocols.csc_state (the contract the
composer uses) and a plain PUB socket standing in for the composer.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import yaml
import zmq
from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import make_idl_struct
from cyclonedds.idl import types as t
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from procs.csc import CardsError, Csc, apply_cards
from protocols import sal
from protocols.config import load_instance
from protocols.csc_state import CscStateFollower, ErrorCode, State, fault_frames
from protocols.envelope import Sender, decode, sender_id
from tests.conftest import fresh_domain_and_offset
from tools.runner import Deployment, venv_bin

CSC = "ATHeaderService"
YAML_PATH = Path(__file__).resolve().parent.parent / "protocols" / "sal_topics.yaml"
SAL_YAML = yaml.safe_load(YAML_PATH.read_text())

# -- an independent SAL client: types straight from the YAML ---------------------------------------

TYPES = {"double": t.float64, "float": t.float32, "long": t.int32, "int": t.int32, "short": t.int16,
         "long long": t.int64, "boolean": bool, "string": str}  # fmt: skip
PRIVATE = {"salIndex": t.int32, "private_sndStamp": t.float64, "private_rcvStamp": t.float64,
           "private_seqNum": t.int32, "private_identity": str, "private_origin": t.int32}  # fmt: skip
ACKCMD = [("ack", "long"), ("error", "long"), ("result", "string"), ("identity", "string"),
          ("origin", "long"), ("cmdtype", "long"), ("timeout", "double")]  # fmt: skip
RELIABLE = [Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(100)]
EVENT_QOS = Qos(*RELIABLE, Policy.Durability.TransientLocal)
VOLATILE_QOS = Qos(*RELIABLE, Policy.Durability.Volatile)

INPROGRESS, COMPLETE, NOPERM, FAILED = 301, 303, -300, -302
DISABLED, ENABLED, FAULT, OFFLINE, STANDBY = 1, 2, 3, 4, 5
EVENTS = ["summaryState", "heartbeat", "errorCode", "logMessage", "softwareVersions",
          "configurationsAvailable", "configurationApplied", "logLevel"]  # fmt: skip


def plain_struct(component: str, generic: str) -> tuple[str, type]:
    """(DDS topic name, type) of a SAL topic, from the YAML: SALGeneric, else the HeaderService section."""
    if generic == "ackcmd":
        fields = ACKCMD
    else:
        section = SAL_YAML["SALGeneric"] if generic in SAL_YAML["SALGeneric"] else SAL_YAML["HeaderService"]
        fields = [(f["name"], f["type"]) for f in section[generic]["fields"]]
    members: dict[str, Any] = dict(PRIVATE)
    members.update({n: TYPES[ty] for n, ty in fields})
    name = f"{component}_{generic}"
    return name, make_idl_struct(name, f"{component}::{generic}", members, field_annotations={"salIndex": {"key": True}})


class SalClient:
    """Commands a CSC and records its events, as a plain DDS program."""

    def __init__(self, domain: int, component: str = CSC):
        self.component = component
        self.dp = DomainParticipant(domain)
        self.identity = f"test-client-{os.getpid()}-{random.randint(0, 10**6)}"
        self.origin = os.getpid()
        self.seq = itertools.count(random.randint(1, 10**6))
        self.readers = {}
        for ev in EVENTS:
            name, cls = plain_struct(component, f"logevent_{ev}")
            self.readers[ev] = DataReader(self.dp, Topic(self.dp, name, cls, qos=EVENT_QOS), qos=EVENT_QOS)
        name, cls = plain_struct(component, "ackcmd")
        self.ack_reader = DataReader(self.dp, Topic(self.dp, name, cls, qos=VOLATILE_QOS), qos=VOLATILE_QOS)
        self.writers: dict[str, tuple[Any, type]] = {}
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.acks: list[dict[str, Any]] = []

    @staticmethod
    def _take(reader: Any) -> list[dict[str, Any]]:
        out = []
        for s in reader.take(N=500):
            info = getattr(s, "sample_info", None)
            if info is not None and not info.valid_data:
                continue
            d = {k: getattr(s, k) for k in s.__annotations__}
            d["_received"] = time.monotonic()
            out.append(d)
        return out

    def poll(self) -> None:
        for ev, reader in self.readers.items():
            self.events[ev].extend(self._take(reader))
        self.acks.extend(self._take(self.ack_reader))

    def wait_event(self, ev: str, pred: Callable[[dict[str, Any]], bool] = lambda d: True, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for d in self.events[ev]:
                if pred(d):
                    return d
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching {ev} within {timeout} s; got {self.events[ev][-5:]}")
            time.sleep(0.02)

    def states(self) -> list[int]:
        self.poll()
        return [d["summaryState"] for d in self.events["summaryState"]]

    def wait_state(self, state: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.states() and self.states()[-1] == state):
            assert time.monotonic() < deadline, f"summaryState {state} not reached: {self.states()}"
            time.sleep(0.02)

    def _writer(self, cmd: str, timeout: float) -> tuple[Any, type]:
        if cmd not in self.writers:
            name, cls = plain_struct(self.component, f"command_{cmd}")
            self.writers[cmd] = (DataWriter(self.dp, Topic(self.dp, name, cls, qos=VOLATILE_QOS), qos=VOLATILE_QOS), cls)
        writer, cls = self.writers[cmd]
        deadline = time.monotonic() + timeout
        while not (writer.get_matched_subscriptions() and self.ack_reader.get_matched_publications()):
            assert time.monotonic() < deadline, f"the CSC's {cmd} reader / ackcmd writer never matched"
            time.sleep(0.02)
        return writer, cls

    def command(self, cmd: str, timeout: float = 10.0, seq: int | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Send a command (with ``seq``: that private_seqNum); the acks answering this write of it,
        up to and including the final one."""
        writer, cls = self._writer(cmd, timeout)
        if not getattr(self, "_settled", False):
            time.sleep(0.3)  # the CSC's ackcmd writer must have discovered our reader too
            self._settled = True
        seq = next(self.seq) if seq is None else seq
        self.poll()
        before = len(self.acks)
        defaults = {n: "" for n, ty in cls.__annotations__.items() if ty is str}
        defaults.update({n: 0 for n, ty in cls.__annotations__.items() if ty is not str})
        defaults.update(salIndex=0, private_sndStamp=time.time() + 37.0, private_seqNum=seq,
                        private_identity=self.identity, private_origin=self.origin, **fields)  # fmt: skip
        writer.write(cls(**defaults))
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            mine = [a for a in self.acks[before:] if a["private_seqNum"] == seq and a["identity"] == self.identity]
            if mine and mine[-1]["ack"] not in (300, INPROGRESS, 302):
                return mine
            assert time.monotonic() < deadline, f"no final ack for {cmd}: {mine}"
            time.sleep(0.02)


def codes(acks: list[dict[str, Any]]) -> list[int]:
    return [a["ack"] for a in acks]


# -- hs-csc as supervisord runs it ------------------------------------------------------------------


class CscProcess:
    def __init__(self, base: Path, domain: int, offset: int):
        self.dep = Deployment(base / "run", base / "annex", domain, offset)
        self.dep.run_dir.mkdir(parents=True, exist_ok=True)
        self.env = self.dep.env
        self.logs: list[Path] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        logf = self.dep.run_dir / f"hs-csc-{len(self.logs)}.log"
        self.logs.append(logf)
        with open(logf, "w") as fh:
            self.proc = subprocess.Popen([venv_bin("hs-csc"), "--instance", "LATISS"], env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        return self.proc

    def log(self) -> str:
        return "\n".join(p.read_text() for p in self.logs if p.exists())

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None

    def hs_cmd(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([venv_bin("hs-cmd"), "--instance", "LATISS", "--timeout", "10", *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def csc_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CscProcess]:
    domain, offset = fresh_domain_and_offset()
    assert domain != 0
    cp = CscProcess(tmp_path, domain, offset)
    for k in ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_STATE_DIR", "HS_ANNEX"):
        monkeypatch.setenv(k, cp.env[k])
    cp.cfg = load_instance("LATISS")
    yield cp
    cp.stop()


# -- pure parts -------------------------------------------------------------------------------------


def test_setHeaderCards_topic_resolves_for_every_header_service():
    for comp in ("ATHeaderService", "CCHeaderService", "MTHeaderService"):
        st = sal.get_topic(comp, "command_setHeaderCards")
        assert (st.kind, st.dds_name) == ("command", f"{comp}_command_setHeaderCards")
        assert [f.name for f in st.fields] == ["cards", "mode"]
        assert [f.name for f in sal.get_topic(comp, "command_start").fields] == ["configurationOverride"]
    with pytest.raises(sal.UnknownTopicError):
        sal.get_topic("ATCamera", "command_setHeaderCards")
    # the project's command types are exactly the YAML's (an independent client interoperates)
    assert list(sal.idl_class(CSC, "command_setHeaderCards").__annotations__) == list(
        plain_struct(CSC, "command_setHeaderCards")[1].__annotations__
    )


def test_apply_cards_modes_and_validation():
    cur = apply_cards({}, '{"observer": "Jane Doe", "TEMP": {"value": 2.5, "comment": "deg C"}}', "")
    assert cur == {"OBSERVER": {"value": "Jane Doe", "comment": ""}, "TEMP": {"value": 2.5, "comment": "deg C"}}
    merged = apply_cards(cur, '{"TEMP": null, "ESO DET CHIP NAME": "x", "FLAG": true, "N": 3}', "merge")
    assert sorted(merged) == ["ESO DET CHIP NAME", "FLAG", "N", "OBSERVER"]
    assert apply_cards(cur, '{"N": 1}', "replace") == {"N": {"value": 1, "comment": ""}}
    assert apply_cards(cur, "", "clear") == {}
    bad = {
        '{"X": NaN}': "NaN",
        '{"X": Infinity}': "infinity",
        '{"X": [1, 2]}': "string, integer, float or boolean",
        '{"X": "caf\\u00e9"}': "non-ASCII",
        '{"X": "a\\nb"}': "non-printable",
        '{"BAD=KEY": 1}': "neither a FITS keyword",
        '{"NAXIS1": 1}': "reserved",
        '{"SIMPLE": true}': "reserved",
        '{"X": {"value": 1, "unit": "m"}}': "unknown field",
        '{"X": {"comment": "c"}}': "no value",
        '{"X": 1, "X": 2}': "twice",
        '{"X": 1, "x": 2}': "twice",
        "[1]": "JSON object",
        "{nope": "not valid JSON",
        '{"X": 99999999999999999999999}': "64 bits",
        '{"' + "A" * 70 + '": 1}': "HIERARCH",
    }
    for cards, reason in bad.items():
        with pytest.raises(CardsError, match=reason):
            apply_cards({}, cards, "merge")
    with pytest.raises(CardsError, match="mode"):
        apply_cards({}, '{"X": 1}', "append")
    with pytest.raises(CardsError, match="null"):
        apply_cards({}, '{"X": null}', "replace")
    with pytest.raises(CardsError, match="give no cards"):
        apply_cards({}, '{"X": 1}', "clear")


def test_follower_before_any_csc_and_fault_frames(csc_env):
    f = CscStateFollower(csc_env.cfg)
    try:
        assert (f.state, f.enabled, f.overrides, f.overrides_version) == ("UNKNOWN", False, {}, 0)
        t0 = time.monotonic()
        assert f.refresh(0.2) is False and f.poll() is False
        assert time.monotonic() - t0 < 1.0 and f.state == "UNKNOWN" and f.age == float("inf")
    finally:
        f.close()
    msg = decode(fault_frames(Sender("composer.LATISS@h:1:0"), "LATISS", ErrorCode.ANNEX_UNWRITABLE, "disk full"))
    assert msg.topic == "ctl.fault.LATISS" and msg.payload == {"code": 1, "report": "disk full"}
    assert [ErrorCode.ANNEX_UNWRITABLE, ErrorCode.CACHE_UNREACHABLE, ErrorCode.TEMPLATE_UNREADABLE,
            ErrorCode.LISTENER_SILENT] == [1, 2, 3, 4]  # fmt: skip


def test_start_with_a_configuration_override_file(csc_env, tmp_path):
    """start(configurationOverride=NAME) applies the cards of <overrides dir>/NAME; unknown names fail."""
    folder = tmp_path / "overrides"
    folder.mkdir()
    (folder / "night.yaml").write_text("cards:\n  OBSERVER: Night Crew\n  PROGRAM: {value: survey, comment: what}\n")
    (folder / "broken.yaml").write_text("cards:\n  X: .nan\n")
    csc = Csc(csc_env.cfg, overrides_dir=folder)
    try:
        assert csc.available_configurations() == ["instance.yaml", "broken.yaml", "night.yaml"]

        seqs = itertools.count(1)

        def start(name: str) -> None:  # each a new command: a repeated seqNum is answered, not run
            csc.handle_command("start", SimpleNamespace(configurationOverride=name, private_seqNum=next(seqs),
                                                        private_identity="t", private_origin=1))  # fmt: skip

        start("nope.yaml")
        start("broken.yaml")
        assert csc.state == State.STANDBY and csc.store.data["version"] == 0
        start("night.yaml")
        assert csc.state == State.DISABLED and csc.applied == "night.yaml"
        assert csc.store.data["version"] == 1
        assert csc.store.data["cards"]["PROGRAM"] == {"value": "survey", "comment": "what"}
        assert csc.counts["cmd_start"] == 3
    finally:
        csc.close()


# -- the CSC on DDS ---------------------------------------------------------------------------------


def test_lifecycle_acks_and_events(csc_env):
    client = SalClient(csc_env.cfg.dds_domain)
    proc = csc_env.start()
    try:
        client.wait_state(STANDBY, timeout=20)
        sv = client.wait_event("softwareVersions")
        assert sv["cscVersion"] == importlib.metadata.version("rubin-header-service")
        assert sv["salVersion"] and sv["xmlVersion"].startswith("sal_topics.yaml")
        assert "instance.yaml" in client.wait_event("configurationsAvailable")["overrides"].split(",")
        assert client.wait_event("logLevel")["level"] == 20

        # not allowed in STANDBY: refused at once, no INPROGRESS
        acks = client.command("enable")
        assert codes(acks) == [NOPERM] and "STANDBY" in acks[0]["result"]
        assert {(a["identity"], a["origin"], a["salIndex"]) for a in acks} == {(client.identity, client.origin, 0)}

        assert codes(client.command("start", configurationOverride="")) == [INPROGRESS, COMPLETE]
        assert client.states()[-1] == DISABLED
        assert client.wait_event("configurationApplied")["configurations"] == "instance.yaml"
        acks = client.command("start", configurationOverride="")
        assert codes(acks) == [NOPERM]
        assert codes(client.command("enable")) == [INPROGRESS, COMPLETE]
        assert client.states()[-1] == ENABLED

        # setHeaderCards rejected with the specific reason
        for cards, mode, reason in [
            ('{"OBSERVER": NaN}', "merge", "NaN"),
            ('{"WAY TOO=LONG": 1}', "merge", "neither a FITS keyword"),
            ('{"OBSERVER": "Jos\\u00e9"}', "merge", "non-ASCII"),
            ('{"OBSERVER": "x"}', "append", "mode"),
        ]:
            acks = client.command("setHeaderCards", cards=cards, mode=mode)
            assert codes(acks) == [INPROGRESS, FAILED], acks
            assert reason in acks[-1]["result"]
        acks = client.command("setHeaderCards", cards='{"OBSERVER": "Jane Doe"}', mode="merge")
        assert codes(acks) == [INPROGRESS, COMPLETE] and "version 1" in acks[-1]["result"]

        assert codes(client.command("setLogLevel", level=10, subsystem="")) == [INPROGRESS, COMPLETE]
        assert client.wait_event("logLevel", lambda d: d["level"] == 10)
        assert codes(client.command("disable")) == [INPROGRESS, COMPLETE]
        assert codes(client.command("setHeaderCards", cards='{"N": 1}', mode="merge")) == [INPROGRESS, COMPLETE]
        assert codes(client.command("standby")) == [INPROGRESS, COMPLETE]
        assert codes(client.command("setHeaderCards", cards='{"N": 2}', mode="merge")) == [NOPERM]
        assert codes(client.command("standby")) == [NOPERM]
        deadline = time.monotonic() + 8
        while len(client.events["heartbeat"]) < 4:  # a few seconds of heartbeats, whatever the pace above
            assert time.monotonic() < deadline, client.events["heartbeat"]
            client.poll()
            time.sleep(0.05)
        assert codes(client.command("exitControl")) == [INPROGRESS, COMPLETE]
        client.wait_state(OFFLINE)
        assert proc.wait(10) == 0, csc_env.log()

        assert client.states() == [STANDBY, DISABLED, ENABLED, DISABLED, STANDBY, OFFLINE]
        # every ack answers its command: private_seqNum of the command, a known cmdtype
        assert all(a["private_seqNum"] >= 0 and a["cmdtype"] >= 0 for a in client.acks)
        # the refused command and the failed ones are in logMessage
        client.poll()
        assert any("refused" in m["message"] and m["level"] == 30 for m in client.events["logMessage"])
        # heartbeat about once a second for the whole run
        beats = client.events["heartbeat"]
        stamps = [b["private_sndStamp"] for b in beats]
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        span = stamps[-1] - stamps[0]
        assert len(beats) >= 3 and abs(len(gaps) - span) <= 1.5, gaps
        assert all(0.5 < g < 1.6 for g in gaps), gaps
        arrivals = sorted(b["_received"] for b in beats)  # the client joined first: all arrive live
        arrival_gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
        assert 0.7 < arrival_gaps[len(arrival_gaps) // 2] < 1.3, arrival_gaps
        assert not client.events["errorCode"]
    finally:
        csc_env.stop()


def test_fault_from_composer_and_follower(csc_env):
    cfg = csc_env.cfg
    client = SalClient(cfg.dds_domain)
    follower = CscStateFollower(cfg, role="composer")
    ctx = zmq.Context.instance()
    composer_pub = ctx.socket(zmq.PUB)
    composer_pub.bind(cfg.endpoints.composer_pub)  # stands in for hs-composer's PUB socket
    sender = Sender(sender_id("composer", cfg.instrument))
    csc_env.start()
    try:
        client.wait_state(STANDBY, timeout=20)
        assert follower.refresh(5.0) and follower.state == "STANDBY" and not follower.enabled
        assert codes(client.command("start", configurationOverride="")) == [INPROGRESS, COMPLETE]
        assert codes(client.command("enable")) == [INPROGRESS, COMPLETE]

        def follow(pred: Callable[[], bool], what: str) -> None:  # PUB path only: no refresh
            deadline = time.monotonic() + 5
            while not pred():
                assert time.monotonic() < deadline, f"follower never saw {what}: {follower.payload}"
                follower.poll()
                time.sleep(0.02)

        follow(lambda: follower.enabled, "ENABLED")
        assert follower.state == "ENABLED" and follower.payload["stateCode"] == 2 and follower.age < 2
        cards = {"OBSERVER": {"value": "Jane Doe", "comment": "night lead"}, "ESO TEST": 3}
        assert codes(client.command("setHeaderCards", cards=json.dumps(cards), mode="replace")) == [INPROGRESS, COMPLETE]
        follow(lambda: follower.overrides_version == 1, "overrides v1")
        assert follower.overrides == {"OBSERVER": {"value": "Jane Doe", "comment": "night lead"},
                                      "ESO TEST": {"value": 3, "comment": ""}}  # fmt: skip
        assert follower.payload["overrides"]["by"] == client.identity

        # the composer reports a fault: ENABLED -> FAULT with errorCode
        report = "cache tcp://127.0.0.1:1 silent for 30 s"
        deadline = time.monotonic() + 10
        while not (client.states() and client.states()[-1] == FAULT):
            assert time.monotonic() < deadline, f"no FAULT: {client.states()}\n{csc_env.log()}"
            composer_pub.send_multipart(fault_frames(sender, cfg.instrument, ErrorCode.CACHE_UNREACHABLE, report))
            time.sleep(0.2)
        err = client.wait_event("errorCode")
        assert err["errorCode"] == 2 and report in err["errorReport"] and "composer" in err["errorReport"]
        follow(lambda: follower.state == "FAULT", "FAULT")
        assert not follower.enabled
        assert codes(client.command("enable")) == [NOPERM]
        assert codes(client.command("setHeaderCards", cards='{"N": 1}', mode="merge")) == [NOPERM]
        assert codes(client.command("standby")) == [INPROGRESS, COMPLETE]
        # in STANDBY a fault report is only logged
        for _ in range(4):
            composer_pub.send_multipart(fault_frames(sender, cfg.instrument, ErrorCode.LISTENER_SILENT, "again"))
            time.sleep(0.15)
        assert client.states()[-2:] == [FAULT, STANDBY]
        assert len(client.events["errorCode"]) == 1
        assert follower.refresh(2.0) and follower.state == "STANDBY"
        assert csc_env.stop() == 0
    finally:
        follower.close()
        composer_pub.close(linger=0)


def test_overrides_survive_restart_and_hs_cmd(csc_env):
    cfg = csc_env.cfg
    csc_env.start()
    r = csc_env.hs_cmd("start")
    assert r.returncode == 0 and "CMD_COMPLETE" in r.stdout, r.stdout + r.stderr + csc_env.log()
    r = csc_env.hs_cmd("setHeaderCards", "--cards", '{"OBSERVER": "Jane Doe", "TEMP": {"value": 2.5, "comment": "deg C"}}')
    assert r.returncode == 0 and "version 1" in r.stdout, r.stdout + r.stderr
    r = csc_env.hs_cmd("setHeaderCards", "--cards", '{"OBSERVER": NaN}')
    assert r.returncode == 1 and "CMD_FAILED" in r.stdout and "NaN" in r.stdout, r.stdout
    r = csc_env.hs_cmd("enable")
    assert r.returncode == 0 and "CMD_COMPLETE" in r.stdout
    r = csc_env.hs_cmd("state")
    assert r.returncode == 0 and "ENABLED (2)" in r.stdout, r.stdout + r.stderr
    stored = json.loads((Path(cfg.state_dir) / "LATISS" / "csc_overrides.json").read_text())
    assert stored["version"] == 1 and stored["cards"]["OBSERVER"]["value"] == "Jane Doe"

    # a CSC stopped (SIGTERM) and started again resumes its commanded state with the overrides it had
    assert csc_env.stop() == 0
    proc = csc_env.start()
    follower = CscStateFollower(cfg)
    try:
        deadline = time.monotonic() + 20
        while not follower.refresh(1.0):
            assert time.monotonic() < deadline, csc_env.log()
        assert follower.state == "ENABLED" and follower.overrides_version == 1
        assert follower.overrides == {"OBSERVER": {"value": "Jane Doe", "comment": ""},
                                      "TEMP": {"value": 2.5, "comment": "deg C"}}  # fmt: skip
        r = csc_env.hs_cmd("enable")
        assert r.returncode == 1 and "CMD_NOPERM" in r.stdout
        for cmd in ("disable", "standby", "exitControl"):
            r = csc_env.hs_cmd(cmd)
            assert r.returncode == 0 and "CMD_COMPLETE" in r.stdout, (cmd, r.stdout)
        assert proc.wait(10) == 0
    finally:
        follower.close()
