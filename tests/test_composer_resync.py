"""A composer restarted while the cache is down: it waits for the cache, then replays the missed
camera events in time order and finishes the exposure complete (real sockets, in process)."""

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
        time.sleep(0.2)
        gc.enable()
        gc.unfreeze()
        for obj in (composer, cache):
            if obj is None:
                continue
            for name in ("sub", "push", "acks", "pub", "router"):
                sock = getattr(obj, name, None)
                if sock is not None:
                    sock.close(linger=0)
            for client in (getattr(obj, "cache", None), getattr(obj, "listener", None)):
                if client is not None and hasattr(client, "close"):
                    client.close()
