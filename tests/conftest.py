"""Shared harness: real deployments under supervisord, each test on its own DDS domain and ports."""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


SLOTS = 140  # DDS domains 10..149 (hs-bench --quick keeps to 150..199), port offsets 20000..22780
SLOT_LOCKS = Path(tempfile.gettempdir()) / "hs-test-slots"
_band: list[int] = []  # this process's slots
_band_locks: list[int] = []  # their lock files, held open (and so locked) while this process lives


def _claim_band(size: int = 10) -> list[int]:
    """Slots of this process's own: each is locked (flock) for as long as the process lives, so no
    other test process on this machine (another pytest-xdist worker, another run) takes its DDS
    domain or ports meanwhile. The search starts at a pid-spread slot; a slot locked by another
    process is passed over. Ten per process: a slot comes back to a process after ten tests, when
    whatever an earlier test started on its DDS domain has long exited."""
    if not _band:
        SLOT_LOCKS.mkdir(exist_ok=True)
        start = (os.getpid() * 37) % SLOTS
        for i in range(SLOTS):
            slot = (start + i) % SLOTS
            fd = os.open(SLOT_LOCKS / f"{slot}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            _band_locks.append(fd)
            _band.append(slot)
            if len(_band) == size:
                break
        if not _band:
            raise RuntimeError(f"every test slot in {SLOT_LOCKS} is taken by another process")
    return _band


def _slot() -> int:
    """A per-test slot (DDS domain and port offset), taken in turn from this process's own."""
    band = _claim_band()
    return band[next(_counter) % len(band)]


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
def cache_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real CacheServer (procs/cache.py) on loopback ports of this test, its state and annex in
    tmp_path, holding nothing yet; served by the test's own calls (on_sample, on_request)."""
    from procs.cache import CacheServer
    from protocols.config import load_instance, replace

    for k in ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_ANNEX", "HS_STATE_DIR", "HS_BUS"):
        monkeypatch.delenv(k, raising=False)
    _, offset = fresh_domain_and_offset()
    cfg = replace(load_instance("LATISS"), port_base=5550 + offset + 10, state_dir=tmp_path / "state",
                  annex=str(tmp_path / "annex"))
    server = CacheServer(cfg)
    yield server
    for sock in (server.sub, server.router):
        sock.close(linger=0)
    server.listener.close()


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
