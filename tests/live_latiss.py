"""One LATISS deployment under supervisord, seen from a test: its settings, a simulator player on
its DDS domain, a reader of its announcements, and the small clients tests use to question it.

Shared by the deployment-level bad-input tests and the annex-fault tests; each module starts its
own deployment (``live_latiss``), so no test depends on what another module did to one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocols.config import InstanceConfig, load_instance
from protocols.envelope import Sender, decode
from tests.conftest import fresh_domain_and_offset, see_deployment
from tests.plain_dds import PlainReader
from tools.runner import Deployment
from tools.sim.player import Player

LATISS_PROGRAMS = ("latiss-listener", "latiss-cache", "latiss-composer", "latiss-publisher", "latiss-csc")
TESTER = Sender("tester.LATISS@bad-input:0:0")


@dataclass
class LiveLatiss:
    """A running LATISS deployment and what a test needs to drive and observe it."""

    dep: Deployment
    cfg: InstanceConfig
    reader: PlainReader
    player: Player
    base: Path

    @property
    def annex(self) -> Path:
        return self.dep.annex


@contextmanager
def live_latiss(base: Path, make_player: Callable[[int], Player] | None = None) -> Iterator[LiveLatiss]:
    """Start LATISS (ENABLED) in ``base``; this process sees its settings for as long as it lasts."""
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(base / "run", base / "annex", domain, offset)
    player: Player | None = None
    with pytest.MonkeyPatch.context() as mp:
        dep.start()
        try:
            dep.start_instance("LATISS")
            dep.wait_running("LATISS")
            see_deployment(mp, dep)
            reader = PlainReader(domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
            player = make_player(domain) if make_player else Player(domain, log=open(os.devnull, "w"))  # noqa: SIM115
            yield LiveLatiss(dep, load_instance("LATISS"), reader, player, base)
        finally:
            if player is not None:
                player.close()
            dep.stop()


def frames(topic: str, payload: Any) -> list[bytes]:
    """A well-formed message from the tester."""
    return TESTER.frames(topic, payload)


def ask(endpoint: str, request: list[bytes], timeout: float = 3.0) -> Any:
    """Send one request through a DEALER (REQ framing); the decoded reply payload, or None."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart([b""] + request)
        if not sock.poll(int(timeout * 1000)):
            return None
        reply = sock.recv_multipart()
        return decode(reply[1:] if reply and reply[0] == b"" else reply).payload
    finally:
        sock.close()


def push(endpoint: str, messages: list[list[bytes]]) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 3000)
    sock.connect(endpoint)
    for m in messages:
        sock.send_multipart(m)
    sock.close()


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def announced(live: LiveLatiss) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in live.reader.poll()}


def annex_path(live: LiveLatiss, image: str, suffix: str = ".fits") -> Path:
    ann = announced(live)[image]
    return (live.annex / ann["url"].split("/", 3)[3]).with_suffix(suffix)


def primary(live: LiveLatiss, image: str, hdu: int = 0) -> Any:
    import fitsio

    return fitsio.read_header(str(annex_path(live, image)), hdu)


def prov(live: LiveLatiss, image: str) -> dict[str, Any]:
    return json.loads(annex_path(live, image, ".prov.json").read_text())


def readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def composer_status(live: LiveLatiss) -> dict[str, Any]:
    reply = ask(live.cfg.endpoints.composer_router, frames("ctl.request.status", {"op": "status"}))
    assert reply is not None, "the composer did not answer its status request"
    return reply


def cache_status(live: LiveLatiss) -> dict[str, Any]:
    from protocols.messages import CacheClient

    client = CacheClient(live.cfg.endpoints.cache_router, Sender("tester.LATISS@bad-input:0:1"), timeout_s=3.0)
    try:
        return client.request({"op": "status"})
    finally:
        client.close()
