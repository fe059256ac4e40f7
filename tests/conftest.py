"""Shared harness: real deployments under supervisord, each test on its own DDS domain and ports."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from protocols.sal import LOOPBACK_XML
from tests.kafka_harness import local_kafka, subname  # noqa: F401 (fixtures for every test module)

if TYPE_CHECKING:
    from tools.runner import Deployment

_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order (no test may depend on another's leftovers)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture(scope="session", autouse=True)
def loopback_dds() -> Iterator[None]:
    """Cyclone DDS in this process stays on loopback (unless the caller chose a configuration)."""
    with pytest.MonkeyPatch.context() as mp:
        if "CYCLONEDDS_URI" not in os.environ:
            mp.setenv("CYCLONEDDS_URI", LOOPBACK_XML.as_uri())
        yield


def see_deployment(mp: pytest.MonkeyPatch, dep: Deployment) -> None:
    """Make this process see a deployment's settings (load_instance, DDS) until ``mp`` is undone."""
    for k, v in dep.settings_env().items():
        mp.setenv(k, v)


BANDS = 28  # bands of 5 slots: DDS domains 10..149 (hs-bench --quick keeps to 150..199), port offsets 20000..22795


def _band() -> int:
    """This process's band: spread by pid so that runs on one machine seldom collide, and by
    pytest-xdist worker so that the workers of one run never do."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    index = int(worker) if worker.isdigit() else 0
    per_worker = max(1, BANDS // workers)
    return ((os.getpid() % per_worker) * workers + index) % BANDS


def _slot() -> int:
    """A per-test slot (DDS domain and port offset) of this process's band."""
    return _band() * 5 + next(_counter) % 5


@pytest.fixture
def domain_id() -> int:
    return 10 + _slot()


def _ports_free(offset: int) -> bool:
    """No process listens on the ports any instance would take with this offset (port_base..+9)."""
    import socket

    for base in (5550, 5560, 5570):  # LATISS, ComCam, LSSTCam instance.yaml
        for port in range(base + offset, base + offset + 10):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    return False
    return True


def fresh_domain_and_offset() -> tuple[int, int]:
    """A DDS domain and port offset of their own; slots whose ports are taken (a deployment left
    running by another run on this shared machine) are passed over."""
    for _ in range(200):
        s = _slot()
        if _ports_free(20000 + 20 * s):
            break
    return 10 + s, 20000 + 20 * s


@pytest.fixture
def deployment_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Deployment]]:
    """``make(instruments, bus="dds"|"kafka", enable=True)``: a deployment under supervisord; on Kafka
    its processes join the module's embedded bus (``local_kafka``) under a topic subname of their own."""
    from tools.runner import Deployment

    started: list[Deployment] = []

    def make(instruments: tuple[str, ...] = ("LATISS",), bus: str = "dds", enable: bool = True) -> Deployment:
        domain, offset = fresh_domain_and_offset()
        base = tmp_path_factory.mktemp("hs")
        extra: dict[str, str] = {}
        if bus == "kafka":
            extra = request.getfixturevalue("local_kafka").env(f"d{os.getpid()}x{next(_counter)}")
        dep = Deployment(base / "run", base / "annex", domain, offset, extra_env=extra, bus=bus)
        dep.start()
        started.append(dep)
        for inst in instruments:
            dep.start_instance(inst)
        for inst in instruments:
            dep.wait_running(inst, enable=enable)
        return dep

    yield make
    for dep in started:
        dep.stop()


def run_sim(dep: Deployment, scenario: Path, speed: float = 20.0, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Play a scenario onto the deployment's DDS domain with hs-sim, as an operator would."""
    exe = Path(sys.executable).parent / "hs-sim"
    return subprocess.run(
        [str(exe), "--scenario", str(scenario), "--speed", str(speed), "--domain", str(dep.domain)],
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
