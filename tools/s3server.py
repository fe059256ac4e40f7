"""A real S3 server on loopback for the demo and the tests: moto's server mode (``moto_server``).

The Header Service talks plain S3 over HTTP to it, exactly as to the summit's Large File Annex;
nothing is mocked in-process. :meth:`MotoServer.pause` / :meth:`resume` (SIGSTOP / SIGCONT) make
an outage in which S3 accepts connections but never answers, and keeps its objects.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tools.runner import venv_bin

#: Credentials of the loopback server (moto accepts any; boto3 needs some).
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "hs-test", "AWS_SECRET_ACCESS_KEY": "hs-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """``moto_server`` on 127.0.0.1:<port>, started and stopped by its pid."""

    def __init__(self, port: int | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client of this server needs in its environment."""
        return {"S3_ENDPOINT_URL": self.url, **TEST_CREDENTIALS}

    def start(self, timeout: float = 30.0) -> "MotoServer":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 (kept with the process)
        self.proc = subprocess.Popen(
            [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()  # noqa: S310 (loopback)
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {self.url}") from None
                time.sleep(0.1)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
