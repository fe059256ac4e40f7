"""Samples in batches: the SAL record batch format, the listener's ring and DDS takes, the cache
storing a batch at once, and a real instance taking a burst of telemetry whole."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import zmq

from protocols import sal, salrecord
from protocols.envelope import EnvelopeError, Sender, decode


def record(stamp: float, speed: float = 3.0, index: int = 301) -> bytes:
    s = sal.make_sample("ESS", "airFlow", index, private_sndStamp=stamp, speed=speed)
    return salrecord.encode(s.serialize(), index, stamp, stamp, None)


# -- the batch format ---------------------------------------------------------------------------


def test_a_batch_carries_its_records_back_unchanged_and_a_single_record_is_itself() -> None:
    recs = [record(1000.0 + i, speed=float(i)) for i in range(5)]
    batch = salrecord.encode_batch(recs)
    assert batch[:4] == b"HSB1"
    assert salrecord.records(batch) == recs
    assert salrecord.records(recs[0]) == [recs[0]]


def test_a_batch_decodes_as_the_list_of_its_samples() -> None:
    snd = Sender("listener.LATISS@test:1:0")
    msg = decode(snd.frames("sal.ESS.airFlow", salrecord.encode_batch([record(1000.0, 1.0), record(1001.0, 2.0)])))
    assert [s["data"]["speed"] for s in msg.payload] == [1.0, 2.0]
    assert [s["sndStamp"] for s in msg.payload] == [1000.0, 1001.0]


@pytest.mark.parametrize(
    "payload",
    [
        b"HSB1",  # no count
        b"HSB1" + struct.pack("<I", 0),  # empty
        b"HSB1" + struct.pack("<I", 3) + struct.pack("<I", 10),  # lengths table cut short
        b"HSB1" + struct.pack("<II", 1, 40) + b"x" * 39,  # a record shorter than its length
        b"HSB1" + struct.pack("<II", 1, 4) + b"x" * 5,  # bytes after the last record
        b"HSB1" + struct.pack("<I", 2**31) + b"x" * 16,  # an absurd count
    ],
)
def test_a_malformed_batch_is_refused_whole_with_the_reason(payload: bytes) -> None:
    with pytest.raises(salrecord.RecordError):
        salrecord.records(payload)
    with pytest.raises(EnvelopeError, match="payload of sal.ESS.airFlow"):
        decode(Sender("listener.LATISS@test:1:0").frames("sal.ESS.airFlow", payload))


# -- the cache's history and server ---------------------------------------------------------------


def test_a_full_history_keeps_the_newest_samples_in_order_as_old_ones_drop() -> None:
    from procs.cache import History

    h = History("ESS", "airFlow")
    for i in range(1000):
        h.add(1000.0 + i, record(1000.0 + i, speed=float(i)), max_samples=50, max_age=1e9, max_bytes=1e12)
    h.add(1990.5, record(1990.5, speed=-1.0), max_samples=50, max_age=1e9, max_bytes=1e12)  # late, in its place
    assert len(h) == 50
    assert h.as_of(1950.5) is None and h.as_of(1951.0)["data"]["speed"] == 951.0
    assert [s["data"]["speed"] for s in h.between(1988.0, 1992.0)] == [988.0, 989.0, 990.0, -1.0, 991.0, 992.0]
    assert h.latest()["data"]["speed"] == 999.0
    assert h.as_of(900.0) is None
    assert h.nbytes == sum(len(r) for r in h.samples[h.start :])
    h.add(5000.0, record(5000.0, speed=7.0), max_samples=50, max_age=10.0, max_bytes=1e12)  # the age bound
    assert len(h) == 1 and h.latest()["data"]["speed"] == 7.0


def test_the_cache_stores_a_batch_and_single_records_alike(cache_server) -> None:  # noqa: ANN001
    snd = Sender("listener.LATISS@test:1:0")
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", salrecord.encode_batch([record(1000.0 + i, float(i)) for i in range(100)])))
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", record(1100.0, 100.0)))  # a sender of single records
    assert cache_server.counts["samples"] == 101 and cache_server.counts["gaps"] == 0
    assert cache_server.store.as_of("ESS.airFlow:301", 1050.5)["data"]["speed"] == 50.0
    assert cache_server.store.as_of("ESS.airFlow:301", 2000.0)["data"]["speed"] == 100.0
    assert cache_server.applied[snd.sender] == 2


def test_one_bad_record_costs_only_itself_and_a_bad_batch_is_counted(cache_server) -> None:  # noqa: ANN001
    snd = Sender("listener.LATISS@test:1:0")
    s = sal.make_sample("ESS", "airFlow", 301, private_sndStamp=1000.0 + 1e6)
    future = salrecord.encode(s.serialize(), 301, 1000.0 + 1e6, 1000.0, None)  # stamped long after its reception
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", salrecord.encode_batch([record(1000.0), future, b"garbage", record(1001.0)])))
    assert cache_server.counts["samples"] == 2 and cache_server.counts["bad_records"] == 2
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", b"HSB1" + struct.pack("<II", 1, 99) + b"x"))
    assert cache_server.counts["bad_messages"] == 1 and cache_server.counts["samples"] == 2


def test_a_batch_persisted_by_the_cache_is_reloaded_record_by_record(cache_server, tmp_path: Path) -> None:  # noqa: ANN001
    from procs.cache import Store
    from procs.cache_segments import Segments

    snd = Sender("listener.LATISS@test:1:0")
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", salrecord.encode_batch([record(1000.0 + i, float(i)) for i in range(10)])))
    cache_server.flush()
    disk = Segments(cache_server.disk.folder, 1e9, 1e12)  # what a restarted cache finds
    store = Store(100, 1e9, disk=disk)
    n, _ = disk.load(store)
    assert n == 10 and [s["data"]["speed"] for s in store.between("ESS.airFlow:301", 0, 2000)] == [float(i) for i in range(10)]


# -- the listener's ring and DDS takes ----------------------------------------------------------------


def test_the_replay_ring_counts_a_batch_by_its_records_and_bytes() -> None:
    from procs.listener import ReplayRing

    ring = ReplayRing(max_samples=100, max_bytes=10_000)
    for seq in range(1, 11):
        ring.append(seq, [b"t", b"e", b"x" * 100], samples=30)
    assert [s for s, _ in ring.after(0)] == [8, 9, 10] and ring.samples == 90 and ring.oldest(11) == 8
    ring.append(11, [b"t", b"e", b"x" * 50_000], samples=1)  # larger than the byte bound: kept alone
    assert [s for s, _ in ring.after(0)] == [11] and ring.nbytes == 50_000
    assert ring.after(11) == [] and ReplayRing(10).oldest(5) == 5


def test_a_take_publishes_telemetry_before_the_camera_event_that_followed_it() -> None:
    from procs.listener import DdsBus
    from protocols.bus import DdsSal
    from tests.conftest import fresh_domain_and_offset

    domain, _ = fresh_domain_and_offset()
    event, telemetry = ("ATCamera", "endOfImageTelemetry"), ("ESS", "airFlow")
    bus = DdsBus(domain, [event, telemetry], urgent=frozenset({event}))
    writers = DdsSal(domain)
    w_tel = writers.writer(*telemetry, identity="ESS:301")
    w_ev = writers.writer(*event, identity="ATCamera")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(w.dds.get_publication_matched_status().current_count for w in (w_tel, w_ev)):
        time.sleep(0.05)
    for i in range(20):
        w_tel.write({"speed": float(i)}, sal_index=301)
    w_ev.write({"imageName": "AT_O_20261124_000001"})
    got: list[tuple[str, int]] = []
    while time.monotonic() < deadline and sum(n for _, n in got) < 21:
        got += [(name, len(taken)) for _c, name, _f, taken, _cls in bus.poll(0.5)]
        bus.pause(0.001)
    assert sum(n for _, n in got) == 21
    assert got[-1] == ("endOfImageTelemetry", 1)


# -- a real instance: a burst of telemetry, taken whole, in batches ------------------------------


def test_an_instance_takes_a_burst_of_telemetry_whole_in_batch_messages(deployment_factory) -> None:  # noqa: ANN001
    from protocols.messages import CacheClient, StatusRequest
    from tools.bench.ingest import Writer

    dep = deployment_factory(("LATISS",), enable=False)
    ep = dep.endpoints("LATISS")
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"sal.ESS.temperature")
    sub.connect(ep.listener_pub)
    client = CacheClient(ep.cache_router, Sender("test.LATISS@test:1:0"), timeout_s=5.0)
    writer = Writer(dep.domain)
    try:
        assert writer.wait_matched(30.0)
        time.sleep(1.0)
        before = client.request(StatusRequest())["counts"].get("samples", 0)
        written, _ = writer.run(20000.0, 1.0)
        deadline = time.monotonic() + 30
        received = 0
        while time.monotonic() < deadline and received < written:
            received = client.request(StatusRequest())["counts"].get("samples", 0) - before
            time.sleep(0.2)
        assert received == written
        payloads = []
        while sub.poll(100):
            payloads.append(sub.recv_multipart()[2])
        assert any(p[:4] == b"HSB1" for p in payloads)
        assert sum(len(salrecord.records(p)) for p in payloads) == written
    finally:
        client.close()
        sub.close(linger=0)
