"""Every process's ``main()`` is :func:`procs.common.run_process`: arguments, logging, the checked
configuration, then the process built and its loop run with a :class:`Stop`. The CSC keeps its own
refusal (sockets already bound: exit 1, the endpoints in one log line)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import zmq

from procs.common import Stop, run_process
from protocols.config import InstanceConfig, load_instance
from protocols.csc_state import state_pub_endpoint, state_rep_endpoint
from tests.conftest import fresh_domain_and_offset
from tools.runner import venv_bin


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ports, DDS domain, state folder and annex of this test alone (children inherit them)."""
    domain, offset = fresh_domain_and_offset()
    monkeypatch.setenv("HS_DDS_DOMAIN", str(domain))
    monkeypatch.setenv("HS_PORT_OFFSET", str(offset))
    monkeypatch.setenv("HS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HS_ANNEX", str(tmp_path / "annex"))
    return tmp_path


def test_run_process_builds_the_instance_then_runs_its_loop(isolated: Path) -> None:
    seen: list[object] = []

    def build(cfg: InstanceConfig):  # noqa: ANN202 (the loop)
        seen.append(cfg)
        return seen.append

    run_process("hs-test", "hs-test: a process of tests.\n\nMore.", build, ["--instance", "ComCam", "--log-level", "debug"])
    assert len(seen) == 2
    cfg, stop = seen
    assert isinstance(cfg, InstanceConfig) and cfg.instrument == "ComCam"
    assert cfg.state_dir == isolated / "state"  # the environment's settings are applied
    assert isinstance(stop, Stop) and not stop.requested


def test_run_process_refuses_unknown_arguments() -> None:
    with pytest.raises(SystemExit) as exc:
        run_process("hs-test", None, lambda cfg: pytest.fail("built"), ["--no-such-option"])
    assert exc.value.code == 2


def test_a_second_csc_of_an_instance_exits_1_naming_its_endpoints(isolated: Path) -> None:
    """Its state sockets already bound (another CSC of the instance): one error line in the
    process's own log format, exit status 1, no traceback."""
    cfg = load_instance("LATISS")
    ctx = zmq.Context.instance()
    taken = ctx.socket(zmq.REP)
    taken.setsockopt(zmq.LINGER, 0)
    taken.bind(state_rep_endpoint(cfg))
    try:
        out = subprocess.run([venv_bin("hs-csc"), "--instance", "LATISS"], capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text, text
    line = next(line for line in text.splitlines() if "cannot open" in line)
    assert re.match(r"^\S+ \S+ ERROR hs-csc\[\d+\] cannot open the CSC's sockets \(", line), line
    assert state_pub_endpoint(cfg) in line and state_rep_endpoint(cfg) in line
