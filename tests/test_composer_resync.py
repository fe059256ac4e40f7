"""A composer restarted while the cache is down: it waits for the cache, then replays the missed
camera events in time order and finishes the exposure complete; a composer whose journal waits for
its disk handles its camera events meanwhile (real sockets, in process)."""

from __future__ import annotations

import gc
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocols import salrecord
from protocols.config import load_instance, replace
from protocols.envelope import Sender
from tests.conftest import fresh_domain_and_offset

IMAGE = "AT_O_20261125_000007"
T0 = 1_795_000_000.0  # TAI s
HS_ENV = ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_ANNEX", "HS_STATE_DIR")  # overrides a deployment exports


def record(topic: str, t: float, **data: Any) -> dict[str, Any]:
    return {"component": "ATCamera", "topic": topic, "salIndex": 0, "sndStamp": t, "rcvStamp": t,
            "srcStamp": None, "data": {"imageName": IMAGE, "private_sndStamp": t, **data}}


EVENTS = [
    record("startIntegration", T0, exposureTime=2.0, timeout=5.0),
    record("startReadout", T0 + 2.0),
    record("endReadout", T0 + 4.0),
    record("imageReadoutParameters", T0 + 4.01),
    record("endOfImageTelemetry", T0 + 4.3, timestampDateObs=T0, timestampDateEnd=T0 + 2.0),
]


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for k in HS_ENV:
        monkeypatch.delenv(k, raising=False)
    _, offset = fresh_domain_and_offset()
    return replace(
        load_instance("LATISS"), port_base=5550 + offset + 10, state_dir=tmp_path / "state", annex=str(tmp_path / "annex")
    )


def test_composer_waits_for_the_cache_then_replays_in_time_order(cfg: Any) -> None:
    from procs.cache import CacheServer
    from procs.composer import Composer

    # The journal of a composer killed mid-exposure: the start seen, its deadline long past on
    # the bus clock (later exposures were seen), the other events published while it was down.
    journal = Path(cfg.state_dir) / cfg.instrument / "composer.json"
    journal.parent.mkdir(parents=True)
    journal.write_text(json.dumps({"open": {IMAGE: {"events": {"startIntegration": EVENTS[0]}, "deadline_tai": T0 + 10}},
                                   "unacked": [], "bus_time": T0 + 60.0}))
    composer = cache = None
    stop = SimpleNamespace(requested=False)
    try:
        composer = Composer(cfg)  # its resync finds no cache
        composer.check_deadlines()
        assert IMAGE in composer.open and IMAGE not in composer.done, "judged late while events were still to come"

        cache = CacheServer(cfg)
        sender = Sender("listener.LATISS@test:1:0")
        for ev in EVENTS:
            cache.on_sample(sender.frames(f"sal.ATCamera.{ev['topic']}", salrecord.encode_sample("ATCamera", ev["topic"], ev)))
        threading.Thread(target=cache.run, args=(stop,), daemon=True).start()

        composer.resync_from_cache()  # what its loop does every second while a resync is pending
        assert composer.done.get(IMAGE) == [1, True]
        assert IMAGE not in composer.open
        history = (Path(cfg.state_dir) / cfg.instrument / "composer-history.jsonl").read_text().splitlines()
        assert {"done": IMAGE, "v": 1, "complete": True, "t": T0} in [json.loads(line) for line in history]
    finally:
        stop.requested = True
        close(composer, cache)


def close(*processes: Any) -> None:
    """The sockets of in-process composers and caches, once their loops have seen their stop."""
    time.sleep(0.2)
    gc.enable()
    gc.unfreeze()
    for obj in processes:
        if obj is None:
            continue
        for name in ("sub", "push", "acks", "pub", "router"):
            sock = getattr(obj, name, None)
            if sock is not None:
                sock.close(linger=0)
        for client in (getattr(obj, "cache", None), getattr(obj, "listener", None)):
            if client is not None and hasattr(client, "close"):
                client.close()


def test_camera_events_are_handled_while_the_journal_waits_for_its_disk(cfg: Any) -> None:
    """The journal's fsync once held the composer's loop for up to 80 ms, and the events queued
    behind it: the whole exposure is now composed and sent while its first snapshot cannot reach
    the disk, and the snapshot written once it can is the latest state."""
    from procs.cache import CacheServer
    from procs.composer import Composer
    from procs.journal import SnapshotWriter, write_atomic

    writing, disk_back = threading.Event(), threading.Event()

    def slow_disk(path: Path, raw: bytes) -> None:
        writing.set()
        disk_back.wait(60)
        write_atomic(path, raw)

    stop = SimpleNamespace(requested=False)
    composer = cache = None
    try:
        cache = CacheServer(cfg)
        threading.Thread(target=cache.run, args=(stop,), daemon=True).start()
        composer = Composer(cfg)
        composer.journal.close()
        composer.journal = SnapshotWriter(composer.state_path, write=slow_disk)
        composer.csc.payload = {"state": "ENABLED"}  # as last heard from its CSC (none runs here)
        sender = Sender("listener.LATISS@test:1:0")
        for ev in EVENTS:
            composer.on_event(sender.frames(f"sal.ATCamera.{ev['topic']}", salrecord.encode_sample("ATCamera", ev["topic"], ev)))
        assert writing.wait(30), "no journal snapshot was handed to the disk"
        assert composer.done.get(IMAGE) == [1, True], "the exposure waited for the journal's disk"
        assert not composer.journal.flush(timeout=0.05), "the snapshot was written while the disk was held"
        disk_back.set()
        assert composer.journal.flush(timeout=30)
        journal = json.loads(composer.state_path.read_text())
        assert IMAGE not in journal["open"] and journal["unacked"] == [IMAGE]
        # five snapshots handed over (four events, then the header sent): the one being written
        # when the disk was held, and the newest of those queued behind it
        assert 1 <= composer.journal.written <= 2, "the snapshots queued behind the slow write were not coalesced"
    finally:
        disk_back.set()
        stop.requested = True
        close(composer, cache)
