"""Exposures taken while the listener is down are not lost: the camera's event writers keep their last
100 samples for late joiners (SAL's event QoS), and a listener that comes back receives them all."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.plain_dds import PlainReader
from tests.test_faults import night_yaml, start_latiss
from tools.sim.night import plan_night
from tools.sim.scenario import load_scenario


def test_exposures_taken_while_the_listener_is_down_are_announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(night_yaml(4, cadence=5.0)))
    images = [e.fields["imageName"] for e in plan_night(load_scenario(path)) if e.topic == "startIntegration"]
    dep = start_latiss(tmp_path, monkeypatch)
    try:
        reader = PlainReader(dep.domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
        dep.supervisorctl("stop", "latiss:latiss-listener")
        sim = subprocess.Popen([str(Path(sys.executable).parent / "hs-sim"), "--scenario", str(path), "--speed", "10",
                                "--domain", str(dep.domain), "-q", "--linger", "60"], env=dep.env)  # fmt: skip
        try:
            time.sleep(8.0)  # the whole night (~2 s at 10x, after up to 2 s of discovery) is played meanwhile
            assert sim.poll() is None, "the simulator must still hold its writers (it lingers)"
            dep.supervisorctl("start", "latiss:latiss-listener")
            got = reader.wait(lambda g: {s["id"] for s in g} >= set(images), timeout=90)
            assert {s["id"] for s in got} >= set(images), f"lost: {set(images) - {s['id'] for s in got}}"
        finally:
            sim.terminate()
            sim.wait(10)
    finally:
        dep.stop()


def test_a_restarted_listener_waits_for_subscribers_that_reconnect_late() -> None:
    import threading

    import zmq

    from procs.listener import wait_for_subscribers

    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"sal.")
    late = threading.Timer(0.5, sub.connect, (f"tcp://127.0.0.1:{port}",))  # a SUB retrying every 100 ms, late
    late.start()
    try:
        assert wait_for_subscribers(pub, [b"sal."], 5.0) == set()
        assert wait_for_subscribers(pub, [b"sal.ATCamera."], 0.3) == {b"sal.ATCamera."}  # nobody: gives up
    finally:
        late.join()
        sub.close(linger=0)
        pub.close(linger=0)
