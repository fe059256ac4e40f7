"""One bus interface, two transports: the DDS side of protocols/bus.py (the Kafka side is exercised by
tests/test_kafka_*.py), and ackcmd's cmdtype numbered as ts_salobj numbers commands, on DDS too."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from procs.csc import CMDTYPES
from protocols import kafka_wire as kw
from protocols.bus import DdsSal, KafkaSal, open_bus
from protocols.config import load_instance
from tests.conftest import fresh_domain_and_offset
from tools.runner import Deployment, venv_bin


def test_cmdtype_is_ts_salobj_numbering() -> None:
    # ts_salobj: index among the component's sorted SAL names, ackcmd first (captured: start is 6)
    assert CMDTYPES == {"disable": 1, "enable": 2, "exitControl": 3, "setLogLevel": 4, "standby": 5, "start": 6, "setHeaderCards": 7}
    assert CMDTYPES == kw.header_service_command_types(["setHeaderCards"])


def test_bus_chosen_by_instance_and_hs_bus(monkeypatch: pytest.MonkeyPatch, domain_id: int) -> None:
    monkeypatch.setenv("HS_DDS_DOMAIN", str(domain_id))
    monkeypatch.delenv("HS_BUS", raising=False)
    assert load_instance("LATISS").bus == "dds"
    assert isinstance(open_bus(load_instance("LATISS")), DdsSal)
    monkeypatch.setenv("HS_BUS", "kafka")
    monkeypatch.setenv("LSST_KAFKA_BROKER_ADDR", "127.0.0.1:9")
    monkeypatch.setenv("LSST_SCHEMA_REGISTRY_URL", "http://127.0.0.1:9")
    cfg = load_instance("LATISS")
    assert cfg.bus == "kafka" and isinstance(open_bus(cfg), KafkaSal)
    monkeypatch.setenv("HS_BUS", "zenoh")
    with pytest.raises(Exception, match="bus"):
        load_instance("LATISS")


def test_dds_csc_acks_with_ts_salobj_cmdtype_through_the_bus_interface(tmp_path: Path) -> None:
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(tmp_path / "run", tmp_path / "annex", domain, offset)
    dep.run_dir.mkdir(parents=True)
    with open(dep.run_dir / "csc.log", "w") as fh:
        proc = subprocess.Popen([venv_bin("hs-csc"), "--instance", "LATISS"], env=dep.env, stdout=fh, stderr=subprocess.STDOUT)
    bus = DdsSal(domain)
    try:
        acks = bus.reader([("ATHeaderService", "ackcmd")])
        states = bus.reader([("ATHeaderService", "summaryState")])
        start = bus.writer("ATHeaderService", "command_start", identity="tester")
        deadline = time.monotonic() + 30
        while not states.poll(0.1):  # the CSC is up (transient-local summaryState)
            assert time.monotonic() < deadline, (dep.run_dir / "csc.log").read_text()
        got: list = []
        sent = 0
        while not any(a.data["ack"] == kw.CMD_COMPLETE for a in got):
            assert time.monotonic() < deadline, got
            if time.monotonic() > sent + 2:  # volatile command: again until the CSC's reader matched
                start.write({"configurationOverride": ""}, seq_num=4242)
                sent = time.monotonic()
            got += [a for a in acks.poll(0.1) if a.data["private_seqNum"] == 4242]
        done = next(a for a in got if a.data["ack"] == kw.CMD_COMPLETE)
        assert done.cmdtype == 6 and done.identity == "tester"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        bus.close()
