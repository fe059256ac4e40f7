"""hs-mirror on Kafka: it follows largeFileObjectAvailable on the bus the instance uses, so a header
announced on Kafka and not (yet) in the summit index is copied to the base annex."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from protocols.bus import KafkaSal
from tests.test_mirror import FakeSummit, entry, fake_fits, index_lines, wait_until
from tools import get as hg
from tools import mirror as hm
from tools.kafka_local import LocalKafka


def test_mirror_copies_what_is_announced_on_kafka(
    local_kafka: LocalKafka, subname: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = local_kafka.env(subname)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    summit = FakeSummit(tmp_path / "summit")
    base = tmp_path / "base"
    summit.publish("AT_O_20261124_000001", 1, fake_fits("img1"))  # in the summit index
    m = hm.Mirror("LATISS", base, summit.url)
    stop = SimpleNamespace(requested=False)
    t = threading.Thread(target=hm.run_follow, args=(m, stop, "ATHeaderService", 0, 300.0, "kafka"), daemon=True)
    t.start()
    bus = KafkaSal.from_env(env)
    lfo = bus.writer("ATHeaderService", "largeFileObjectAvailable", identity="ATHeaderService")
    try:
        wait_until(lambda: m.counts["copied"] == 1, 30, "the copy of the indexed header")
        # a header written on the summit and announced, not in the index the mirror has read
        data = fake_fits("img2")
        e = entry("AT_O_20261124_000002", 1, data, summit.port)
        (summit.root / hg.standard_path(e["imageName"], "LATISS")).write_bytes(data)
        bus.start()
        lfo.write({"generator": "ATHeaderService", "mimeType": "FITS", "url": e["url"], "version": 1.0,
                   "byteSize": len(data), "checkSum": e["md5"], "id": e["imageName"]})  # fmt: skip
        assert bus.flush_pending(10) == 0
        wait_until(lambda: m.counts["copied"] == 2, 60, "the copy of the header announced on Kafka")
    finally:
        stop.requested = True
        t.join(10)
        bus.close()
        summit.close()
    assert not t.is_alive()
    assert (base / e["path"]).read_bytes() == data
    got = {x["imageName"]: x for x in index_lines(base / "LATISS" / "index.jsonl")}
    assert got["AT_O_20261124_000002"]["source"] == "kafka", json.dumps(got)
    assert got["AT_O_20261124_000001"]["source"] == "index"
