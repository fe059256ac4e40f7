"""The CSC's commanded state survives its process: hs-csc killed with SIGKILL under supervisord
comes back ENABLED (journaled), publishes it, and the next exposures get their headers; an orderly
stop and start (SIGTERM) resumes it too; only exitControl ends it. Real supervisord, real DDS, real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
import zmq

from procs.csc import StateJournal
from protocols.config import load_instance
from protocols.csc_state import State
from tests.conftest import run_sim, see_deployment
from tests.plain_dds import PlainReader
from tests.test_faults import night_yaml
from tools.runner import Deployment, venv_bin

ENABLED, STANDBY = 2, 5


def hs_cmd(dep: Deployment, *args: str) -> subprocess.CompletedProcess:
    """hs-cmd as an operator runs it, patient enough for a CSC just (re)started on a loaded machine."""
    return subprocess.run([venv_bin("hs-cmd"), "--instance", "LATISS", "--domain", str(dep.domain), "--timeout", "30", *args],
                          env=dep.env, capture_output=True, text=True, timeout=90)


def restarted(dep: Deployment, program: str, old_pid: int, timeout: float = 30.0) -> int:
    """Wait until supervisord runs ``program`` again under a new pid; that pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dep.status().get(program) == "RUNNING":
            pid = dep.pid(program)
            if pid not in (0, old_pid):
                return pid
        time.sleep(0.2)
    raise AssertionError(f"{program} not restarted: {dep.status()}\n{dep.log(program.split(':')[1])}")


def test_sigkill_of_the_csc_keeps_it_enabled_and_costs_no_header(
    deployment_factory: Callable[..., Deployment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment_factory()  # ENABLED by hs-cmd, as an operator does
    see_deployment(monkeypatch, dep)
    cfg = load_instance("LATISS")
    states = PlainReader(dep.domain, "ATHeaderService", "logevent_summaryState")
    lfo = PlainReader(dep.domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
    skipped = zmq.Context.instance().socket(zmq.SUB)
    skipped.setsockopt(zmq.SUBSCRIBE, b"ctl.skipped.")
    skipped.connect(cfg.endpoints.composer_pub)
    try:
        states.wait(lambda g: g and g[-1]["summaryState"] == ENABLED, timeout=20)
        journal = json.loads((Path(cfg.state_dir) / "LATISS" / "csc_state.json").read_text())
        assert journal["state"] == "ENABLED" and journal["configuration"] == "instance.yaml"

        old = dep.pid("latiss:latiss-csc")
        os.kill(old, signal.SIGKILL)
        new = restarted(dep, "latiss:latiss-csc", old)
        got = states.wait(lambda g: any(s["private_origin"] == new for s in g), timeout=20)
        assert [s["summaryState"] for s in got if s["private_origin"] == new] == [ENABLED], got
        out = hs_cmd(dep, "state")
        assert out.returncode == 0 and "ENABLED (2)" in out.stdout, out.stdout + out.stderr
        assert "resuming ENABLED" in dep.log("latiss-csc")

        path = tmp_path / "night.yaml"
        path.write_text(yaml.safe_dump(night_yaml(3, cadence=6.0)))
        images = subprocess.run([venv_bin("hs-sim"), "--scenario", str(path), "--list-images"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert run_sim(dep, path, speed=10).returncode == 0
        announced = lfo.wait(lambda g: {s["id"] for s in g} >= set(images), timeout=60)
        assert {s["id"] for s in announced} == set(images)
        assert not skipped.poll(500), "an exposure was skipped after the CSC's restart"

        # a stop and start by supervisord is a restart too: the commanded state is resumed
        dep.supervisorctl("stop", "latiss:latiss-csc")
        assert (Path(cfg.state_dir) / "LATISS" / "csc_state.json").exists()
        dep.supervisorctl("start", "latiss:latiss-csc")
        out = hs_cmd(dep, "state")
        assert out.returncode == 0 and "ENABLED (2)" in out.stdout, out.stdout + out.stderr

        # exitControl is the operator's decision to leave: the next start is STANDBY, as for any CSC
        assert hs_cmd(dep, "disable").returncode == 0 and hs_cmd(dep, "standby").returncode == 0
        out = hs_cmd(dep, "exitControl")
        assert out.returncode == 0 and "CMD_COMPLETE" in out.stdout, out.stdout + out.stderr
        assert not (Path(cfg.state_dir) / "LATISS" / "csc_state.json").exists()
        dep.supervisorctl("start", "latiss:latiss-csc")
        out = hs_cmd(dep, "state")
        assert out.returncode == 0 and "STANDBY (5)" in out.stdout, out.stdout + out.stderr
    finally:
        skipped.close(linger=0)


def test_state_journal_round_trip_and_unusable_files(tmp_path: Path) -> None:
    j = StateJournal(tmp_path / "LATISS" / "csc_state.json")
    assert j.load() is None
    j.save(State.FAULT, "instance.yaml", (1, "publisher: annex unwritable"))
    got = j.load()
    assert got is not None and (got["state"], got["errorCode"], got["errorReport"]) == (State.FAULT, 1, "publisher: annex unwritable")
    j.save(State.ENABLED, "instance.yaml", None)
    got = j.load()
    assert got is not None and (got["state"], got["configuration"], got["errorCode"]) == (State.ENABLED, "instance.yaml", None)
    for bad in ('{"state": "OFFLINE"}', '{"state": "NAPPING"}', '[1, 2]', '{"state": "FAULT", "errorCode": "x"}', "{torn"):
        j.path.write_text(bad)
        assert j.load() is None, bad  # a journal that cannot be trusted means a fresh start in STANDBY
    j.clear()
    assert not j.path.exists()
