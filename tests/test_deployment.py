"""Deployment and clean-up as operators meet them: hs-demo interrupted (SIGTERM, SIGINT) stops its
supervisord and the whole instance, leaving the ports free for the next demo; supervisord finds
the programs on PATH, wherever the package is installed, not only in the project's .venv."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from protocols.config import load_instance
from tests.conftest import fresh_domain_and_offset, run_sim, see_deployment
from tests.plain_dds import PlainReader
from tests.test_faults import night_yaml
from tools.runner import CONF, Deployment, venv_bin

PROGRAMS = ["latiss-listener", "latiss-cache", "latiss-composer", "latiss-publisher", "latiss-csc"]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_demo_stops_supervisord_and_the_instance(signum: int, monkeypatch: pytest.MonkeyPatch) -> None:
    domain, offset = fresh_domain_and_offset()
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    demo = subprocess.Popen([venv_bin("hs-demo"), "--exposures", "30", "--speed", "1", "--domain", str(domain),
                             "--port-offset", str(offset)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir: Path | None = None
    try:
        first = demo.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("hs-demo: LATISS"), first
        run_dir = Path(first.rsplit(" logs ", 1)[1].strip())
        dep = Deployment(run_dir, run_dir.parent / "annex", domain, offset)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = {k: v for k, v in dep.status().items() if k.startswith("latiss:")} if (run_dir / "supervisor.sock").exists() else {}
            if len(st) == 5 and all(v == "RUNNING" for v in st.values()):
                break
            time.sleep(0.3)
        assert len(st) == 5 and all(v == "RUNNING" for v in st.values()), st
        pids = [int((run_dir / "supervisord.pid").read_text())] + [dep.pid(f"latiss:{p}") for p in PROGRAMS]
        time.sleep(2.0)  # into the night: hs-sim plays, the CSC is being enabled or is
        demo.send_signal(signum)
        assert demo.wait(60) == 128 + signum
        gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert not (run_dir / "supervisord.pid").exists()
        see_deployment(monkeypatch, dep)
        base = load_instance("LATISS").port_base
        assert [p for p in range(base, base + 10) if not port_free(p)] == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if run_dir is not None:  # an interrupted demo keeps its logs: this test does not need them
            shutil.rmtree(run_dir.parent, ignore_errors=True)


SHIM = """#!/bin/sh
echo "{name} found on PATH in {folder}" >&2
exec {python} -c 'import sys; from {module} import main; sys.argv[0] = "{name}"; main()' "$@"
"""
MODULES = {"hs-listener": "procs.listener", "hs-cache": "procs.cache", "hs-composer": "procs.composer",
           "hs-publisher": "procs.publisher", "hs-csc": "procs.csc"}


def test_deployment_finds_the_programs_on_path_outside_the_project(tmp_path: Path) -> None:
    """The project's supervisord.conf, copied away from the project (no .venv next to it), with a
    PATH holding only the system folders and a folder of hs-* programs of another installation."""
    other = tmp_path / "elsewhere" / "bin"
    other.mkdir(parents=True)
    for name, module in MODULES.items():
        exe = other / name
        exe.write_text(SHIM.format(name=name, folder=other, python=sys.executable, module=module))
        exe.chmod(0o755)
    conf = tmp_path / "conf" / "supervisord.conf"
    conf.parent.mkdir()
    conf.write_text(CONF.read_text())
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(tmp_path / "run", tmp_path / "annex", domain, offset,
                     {"PATH": os.pathsep.join([str(other), "/usr/bin", "/bin"])}, conf=conf)
    dep.start()
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS")
        for program in PROGRAMS:
            assert f"found on PATH in {other}" in dep.log(program), dep.log(program)
        reader = PlainReader(domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
        path = tmp_path / "night.yaml"
        path.write_text(yaml.safe_dump(night_yaml(1)))
        time.sleep(1.0)
        assert run_sim(dep, path, speed=10).returncode == 0
        got = reader.wait(lambda g: len(g) >= 1, timeout=60)
        assert len(got) == 1 and (dep.annex / got[0]["url"].split("/", 3)[3]).exists()
    finally:
        dep.stop()
