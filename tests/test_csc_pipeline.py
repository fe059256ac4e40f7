"""The CSC drives header production: nothing outside ENABLED (exposures reported skipped), operator
cards from the next exposure on, and a provoked fault (annex unwritable) sends it to FAULT; on the
DDS bus and on Kafka."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fitsio
import pytest
import yaml
import zmq

from protocols.config import load_instance
from protocols.envelope import decode
from tests.conftest import fresh_domain_and_offset, run_sim, see_deployment
from tests.kafka_harness import PlainKafkaReader
from tests.plain_dds import PlainReader
from tools.runner import Deployment, venv_bin


def one_exposure(start: str, seq: int, ra: float = 40.0, dayobs: str = "20261124") -> dict:
    return {"instrument": "LATISS", "exposures": [{"start": start, "exptime": 1.0, "ra": ra, "dec": -35.0, "rotpa": 0.0,
                                                    "filter": "SDSSr_65mm", "imgtype": "OBJECT",
                                                    "image_name": f"AT_O_{dayobs}_{seq:06d}"}]}


def hs_cmd(dep: Deployment, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin("hs-cmd"), "--instance", "LATISS", "--domain", str(dep.domain), *args],
                          env=dep.env, capture_output=True, text=True, timeout=60)


def play(dep: Deployment, tmp: Path, name: str, scen: dict) -> str:
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(scen))
    assert run_sim(dep, p, speed=10).returncode == 0
    listed = subprocess.run([venv_bin("hs-sim"), "--scenario", str(p), "--list-images"], capture_output=True, text=True)
    return listed.stdout.split()[0]


@pytest.mark.parametrize("bus", ["dds", "kafka"])
def test_headers_only_when_enabled_overrides_and_fault(
    tmp_path: Path, bus: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    domain, offset = fresh_domain_and_offset()
    extra = request.getfixturevalue("local_kafka").env(f"cscp{domain}") if bus == "kafka" else {}
    dep = Deployment(tmp_path / "run", tmp_path / "annex", domain, offset, extra_env=extra, bus=bus)
    dep.start()
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS", enable=False)  # the CSC starts in STANDBY
        see_deployment(monkeypatch, dep)
        cfg = load_instance("LATISS")
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"ctl.skipped.")
        sub.connect(cfg.endpoints.composer_pub)
        if bus == "kafka":
            reader: Any = PlainKafkaReader(dep.env, "ATHeaderService", "logevent_largeFileObjectAvailable")
            dep.wait_csc_up("LATISS")
        else:
            reader = PlainReader(domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
        time.sleep(1.0)

        skipped_image = play(dep, tmp_path, "standby", one_exposure("2026-11-25T03:04:06.457", 1))
        assert sub.poll(10000), "no skipped report for the exposure taken in STANDBY"
        report = decode(sub.recv_multipart()).payload
        assert report["imageName"] == skipped_image and "STANDBY" in report["reason"]
        assert not reader.poll(), "a header was announced outside ENABLED"

        assert hs_cmd(dep, "start").returncode == 0
        disabled_image = play(dep, tmp_path, "disabled", one_exposure("2026-11-25T03:06:06.000", 2))
        assert sub.poll(10000)
        report = decode(sub.recv_multipart()).payload
        assert report["imageName"] == disabled_image and "DISABLED" in report["reason"]

        assert hs_cmd(dep, "enable").returncode == 0
        before = play(dep, tmp_path, "before", one_exposure("2026-11-25T03:08:06.000", 3))
        reader.wait(lambda g: before in {s["id"] for s in g}, 30)
        out = hs_cmd(dep, "setHeaderCards", "--cards", json.dumps({"OBSERVER": {"value": "Jane Doe", "comment": "observer on duty"}}))
        assert out.returncode == 0, out.stdout + out.stderr
        time.sleep(1.5)
        after = play(dep, tmp_path, "after", one_exposure("2026-11-25T03:10:06.000", 4))
        got = reader.wait(lambda g: after in {s["id"] for s in g}, 30)
        assert {s["id"] for s in got} == {before, after}  # nothing for the skipped exposures
        h_before = fitsio.read_header(str(next(dep.annex.rglob(f"{before}.fits"))))
        h_after = fitsio.read_header(str(next(dep.annex.rglob(f"{after}.fits"))))
        assert h_before["OBSERVER"] == "LSST"  # the template's value until an operator sets it
        assert h_after["OBSERVER"] == "Jane Doe"
        assert [r["name"] for r in h_after.records()].count("OBSERVER") == 1  # replaced in place
        prov = json.loads(next(dep.annex.rglob(f"{after}.prov.json")).read_text())
        assert prov["overrides"]["version"] >= 1 and "OBSERVER" in prov["overrides"]["cards"]

        # the annex day folder cannot be created (a file is in its way): a warning, not a FAULT
        # (errorCode 1 and logMessage; the CSC stays ENABLED so that later exposures are composed)
        day = dep.annex / "LATISS" / "20261124"
        blocked = day.with_name("20261125")
        blocked.write_text("not a folder")
        play(dep, tmp_path, "fault", one_exposure("2026-11-25T12:30:00.000", 1, dayobs="20261125"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "ANNEX_UNWRITABLE" not in dep.log("latiss-csc"):
            time.sleep(0.5)
        assert "errorCode 1 ANNEX_UNWRITABLE (still ENABLED)" in dep.log("latiss-csc"), dep.log("latiss-csc")[-2000:]
        state = hs_cmd(dep, "state").stdout
        assert "ENABLED" in state and "FAULT" not in state, state
    finally:
        dep.stop()
