"""Start and stop a Header Service deployment under supervisord, as operators do.

Used by hs-demo, hs-bench and the tests: one supervisord per deployment, with its own run folder,
annex, DDS domain and port offset, so several can run side by side on one machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocols.config import PROJECT_ROOT, load_instance
from protocols.sal import LOOPBACK_XML
from tools.supervisord_conf import group, instances

CONF = PROJECT_ROOT / "supervisord.conf"
#: Instrument -> its supervisord group (``latiss:*``), as supervisord.conf names them.
GROUPS = {instrument: group(instrument) for instrument in instances()}


def scripts_dir() -> Path | None:
    """Where this installation's console scripts (hs-listener...) are: the scripts folder of the
    running Python's environment (a venv, a user install, a container's prefix), else next to it."""
    for cand in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (cand / "hs-listener").exists():
            return cand
    return None


def venv_bin(name: str) -> str:
    """Path of a console script of this installation; its bare name (found on PATH) otherwise."""
    folder = scripts_dir()
    return str(folder / name) if folder is not None and (folder / name).exists() else name


def search_path(base: str) -> str:
    """PATH for supervisord and its programs: this installation's console scripts first."""
    folder = scripts_dir()
    parts = [p for p in base.split(os.pathsep) if p]
    if folder is not None and str(folder) not in parts[:1]:
        parts.insert(0, str(folder))
    return os.pathsep.join(parts)


class Interrupted(SystemExit):
    """Raised in the main thread by SIGTERM or SIGINT, so that ``finally`` blocks stop what was started."""


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGINT into :class:`Interrupted` (exit status 128 + signal); further ones
    are ignored while the clean-up runs, so a second Ctrl-C cannot leave supervisord behind."""

    def handle(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Interrupted(128 + signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


@dataclass
class Deployment:
    run_dir: Path
    annex: Path
    domain: int = 0
    port_offset: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. a Kafka bus's LSST_* variables
    conf: Path = CONF
    bus: str = "dds"  # the SAL transport of every instance (HS_BUS)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HS_RUN_DIR=str(self.run_dir),
            HS_ANNEX=str(self.annex),
            HS_DDS_DOMAIN=str(self.domain),
            HS_PORT_OFFSET=str(self.port_offset),
            HS_STATE_DIR=str(self.run_dir / "state"),
            PYTHONUNBUFFERED="1",
            HS_BUS=self.bus,
        )
        env["PATH"] = search_path(env.get("PATH", os.defpath))
        env.setdefault("CYCLONEDDS_URI", LOOPBACK_XML.as_uri())
        env.update(self.extra_env)
        return env

    def apply_env(self) -> None:
        """Make this process see the deployment's settings (for load_instance and DDS)."""
        for k in ("HS_ANNEX", "HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_STATE_DIR", "CYCLONEDDS_URI", "HS_BUS", *self.extra_env):
            os.environ[k] = self.env[k]

    def supervisorctl(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(
            [venv_bin("supervisorctl"), "-c", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and out.returncode not in (0, 3):
            raise RuntimeError(f"supervisorctl {' '.join(args)} failed: {out.stdout}{out.stderr}")
        return out.stdout

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.annex.mkdir(parents=True, exist_ok=True)
        subprocess.run([venv_bin("supervisord"), "-c", str(self.conf)], env=self.env, check=True, timeout=30)
        sock = self.run_dir / "supervisor.sock"
        deadline = time.monotonic() + 15
        while not sock.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start: see {self.run_dir / 'supervisord.log'}")
            time.sleep(0.05)

    def start_instance(self, instrument: str) -> None:
        self.supervisorctl("start", f"{GROUPS[instrument]}:*")

    def status(self) -> dict[str, str]:
        out = {}
        for line in self.supervisorctl("status", check=False).splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
        return out

    def pid(self, program: str) -> int:
        return int(self.supervisorctl("pid", program).strip())

    def wait_running(self, instrument: str, timeout: float = 30.0, enable: bool = True) -> None:
        """Wait until every process of the instance runs; then ENABLE its CSC unless told not to."""
        prefix = GROUPS[instrument] + ":"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = {k: v for k, v in self.status().items() if k.startswith(prefix)}
            if st and all(v == "RUNNING" for v in st.values()):
                if enable:
                    self.enable(instrument)
                return
            time.sleep(0.2)
        raise RuntimeError(f"{instrument} processes not running: {self.status()}; logs in {self.run_dir}")

    def enable(self, instrument: str, timeout: float = 30.0) -> None:
        """Drive the instance's CSC STANDBY -> DISABLED -> ENABLED with hs-cmd, as an operator does.

        On Kafka, first wait for the CSC's summaryState: it announces itself once its command reader
        has joined its group, and a command written before that would not be read (as with ts_salobj)."""
        if self.bus == "kafka":
            self.wait_csc_up(instrument, timeout)
        for cmd in ("start", "enable"):
            out = subprocess.run(
                [venv_bin("hs-cmd"), "--instance", instrument, "--domain", str(self.domain), "--timeout", str(timeout), cmd],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout + 30,
            )
            if out.returncode != 0:
                raise RuntimeError(f"hs-cmd {cmd} failed: {out.stdout}{out.stderr}")

    def wait_csc_up(self, instrument: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                [venv_bin("hs-cmd"), "--instance", instrument, "--timeout", "3", "state"],
                env=self.env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if out.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{instrument} CSC not up on Kafka: {out.stdout}{out.stderr}")

    def stop(self) -> None:
        """Shut supervisord down with every process it runs; SIGTERM it by its pid file when it
        does not answer (interrupted while starting, socket gone)."""
        pidfile = self.run_dir / "supervisord.pid"
        try:
            self.supervisorctl("shutdown", check=False)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 20
        signalled = False
        while pidfile.exists() and time.monotonic() < deadline:
            if not signalled and time.monotonic() > deadline - 15:
                signalled = True
                try:
                    os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
                except (OSError, ValueError):
                    pass
            time.sleep(0.1)

    def log(self, program: str) -> str:
        p = self.run_dir / f"{program}.log"
        return p.read_text() if p.exists() else ""

    def endpoints(self, instrument: str):  # noqa: ANN201 (Endpoints)
        self.apply_env()
        return load_instance(instrument).endpoints

    def cleanup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
