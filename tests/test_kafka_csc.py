"""hs-csc on Kafka: commands written as a ts_salobj Remote writes them are answered with ackcmd as a
ts_salobj controller answers (codes, cmdtype, private_seqNum, identity), and its events are on the
bus; with the schema registry unreachable it says so, retries, and cannot be commanded."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocols import kafka_wire as kw
from protocols.bus import KafkaSal
from protocols.config import load_instance
from protocols.csc_state import State, state_rep_endpoint
from protocols.envelope import decode
from tests.conftest import fresh_domain_and_offset, see_deployment
from tools.kafka_local import LocalKafka, free_port
from tools.runner import Deployment, venv_bin

CSC = "ATHeaderService"


class KafkaCsc:
    """hs-csc of LATISS on Kafka, as supervisord runs it."""

    def __init__(self, base: Path, env: dict[str, str]):
        domain, offset = fresh_domain_and_offset()
        self.dep = Deployment(base / "run", base / "annex", domain, offset, extra_env=env, bus="kafka")
        self.dep.run_dir.mkdir(parents=True, exist_ok=True)
        self.logf = self.dep.run_dir / "hs-csc.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.logf, "w") as fh:
            self.proc = subprocess.Popen([venv_bin("hs-csc"), "--instance", "LATISS"], env=self.dep.env, stdout=fh, stderr=subprocess.STDOUT)

    def hs_cmd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv_bin("hs-cmd"), "--instance", "LATISS", "--timeout", "15", *args],
                              env=self.dep.env, capture_output=True, text=True, timeout=60)  # fmt: skip

    def log(self) -> str:
        return self.logf.read_text() if self.logf.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def read_all(bus: KafkaSal, topics: list[str], until: Any, timeout: float = 20.0) -> dict[str, list[dict[str, Any]]]:
    """Every record of the CSC's ``topics`` from the start, until ``until(got)`` or the timeout."""
    reader = bus.reader([(CSC, t) for t in topics], start_at="committed")  # a fresh group: from the first record
    bus.start()
    got: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        for s in reader.poll(0.3):
            got[s.name].append(s.data)
    reader.close()
    return got


def test_csc_answers_commands_and_writes_its_events_on_kafka(local_kafka: LocalKafka, subname: str, tmp_path: Path) -> None:
    csc = KafkaCsc(tmp_path, local_kafka.env(subname))
    csc.start()
    try:
        csc.dep.wait_csc_up("LATISS", 60)
        out = csc.hs_cmd("start")
        assert out.returncode == 0 and "CMD_COMPLETE" in out.stdout, out.stdout + out.stderr + csc.log()
        out = csc.hs_cmd("enable")
        assert out.returncode == 0, out.stdout + out.stderr
        out = csc.hs_cmd("start")  # not allowed in ENABLED
        assert out.returncode == 1 and "CMD_NOPERM" in out.stdout, out.stdout
        out = csc.hs_cmd("state")
        assert "ENABLED" in out.stdout, out.stdout

        bus = KafkaSal(local_kafka.settings(subname))
        topics = ["ackcmd", "summaryState", "heartbeat", "softwareVersions", "configurationsAvailable",
                  "configurationApplied", "logLevel", "logMessage"]  # fmt: skip
        got = read_all(bus, topics, lambda g: len(g["ackcmd"]) >= 5 and len(g["summaryState"]) >= 3
                       and any("refused in ENABLED" in m["message"] for m in g["logMessage"]))  # fmt: skip
        acks = got["ackcmd"]
        # start: INPROGRESS then COMPLETE, with ts_salobj's cmdtype of start (6), its private_seqNum and identity
        start_acks = [a for a in acks if a["cmdtype"] == 6]
        assert [a["ack"] for a in start_acks] == [kw.CMD_INPROGRESS, kw.CMD_COMPLETE, kw.CMD_NOPERM]
        assert len({a["private_seqNum"] for a in start_acks[:2]}) == 1
        assert all(a["identity"] and a["private_identity"] == CSC and a["private_revCode"] for a in acks)
        assert [a["ack"] for a in acks if a["cmdtype"] == 2] == [kw.CMD_INPROGRESS, kw.CMD_COMPLETE]  # enable
        states = [s["summaryState"] for s in got["summaryState"]]
        assert states[:3] == [int(State.STANDBY), int(State.DISABLED), int(State.ENABLED)]
        assert got["heartbeat"] and got["softwareVersions"][0]["salVersion"].startswith("none: Kafka")
        assert got["configurationsAvailable"] and got["configurationApplied"][0]["configurations"] == "instance.yaml"
        assert any("start from" in m["message"] and "refused in ENABLED" in m["message"] for m in got["logMessage"])
        bus.close()
    finally:
        csc.stop()


def test_csc_with_registry_unreachable_says_so_retries_and_is_not_commandable(
    tmp_path: Path, subname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens here
    env = {"LSST_TOPIC_SUBNAME": subname, "LSST_KAFKA_BROKER_ADDR": f"127.0.0.1:{free_port()}",
           "LSST_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    csc = KafkaCsc(tmp_path, env)
    csc.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "not up" not in csc.log():  # the first attempt has failed
            time.sleep(0.5)
        log = csc.log()
        assert "SAL bus (kafka) not up" in log and f"127.0.0.1:{port}" in log and "retrying" in log, log
        assert csc.proc is not None and csc.proc.poll() is None  # still running, retrying
        see_deployment(monkeypatch, csc.dep)
        cfg = load_instance("LATISS")
        req = zmq.Context.instance().socket(zmq.REQ)
        req.connect(state_rep_endpoint(cfg))
        req.send(b"state")
        assert req.poll(5000)
        state = decode(req.recv_multipart()).payload
        req.close(linger=0)
        assert state["state"] == "STANDBY", state
        out = csc.hs_cmd("--timeout", "2", "enable")
        assert out.returncode != 0
    finally:
        csc.stop()
