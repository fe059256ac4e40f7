"""The cache's segments on disk as the place its oldest samples live: a history over its memory
budget keeps answering with every sample, after a restart too; what pruning deletes is forgotten;
a disk that refuses a write keeps the samples in memory."""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import pytest

from procs import cache_segments
from procs.cache import Store
from procs.cache_segments import Segments
from protocols import sal, salrecord
from protocols.envelope import Sender

KEY = "ESS.airFlow:301"
FRAME = b"sal.ESS.airFlow"


def record(stamp: float, speed: float) -> bytes:
    s = sal.make_sample("ESS", "airFlow", 301, private_sndStamp=stamp, speed=speed)
    return salrecord.encode(s.serialize(), 301, stamp, stamp, None)


RECORD_SIZE = len(record(1000.0, 0.0))


def fill(store: Store, disk: Segments, n: int, flush_every: int = 10, t0: float = 1000.0) -> None:
    for i in range(n):
        store.add(FRAME, record(t0 + i, float(i)))
        if i % flush_every == flush_every - 1:
            disk.flush({})


def speeds(store: Store, t0: float = 0.0, t1: float = 1e6) -> list[float]:
    return [s["data"]["speed"] for s in store.between(KEY, t0, t1)]


def test_a_history_over_its_memory_budget_answers_every_sample_from_disk(tmp_path: Path) -> None:
    disk = Segments(tmp_path, 1e9, 1e12)
    store = Store(10_000, 1e9, 20 * RECORD_SIZE, disk)
    fill(store, disk, 500)
    h = store.histories[KEY]
    assert h.nbytes <= 20 * RECORD_SIZE + 10 * RECORD_SIZE  # at most one flush's worth over the budget
    assert sum(r is not None for r in h.samples) * RECORD_SIZE == h.nbytes
    assert speeds(store) == [float(i) for i in range(500)]
    assert store.as_of(KEY, 1000.5)["data"]["speed"] == 0.0  # type: ignore[index]
    assert store.histories[KEY].latest()["data"]["speed"] == 499.0  # type: ignore[index]


def test_without_a_disk_the_oldest_samples_past_the_budget_are_dropped(tmp_path: Path) -> None:
    store = Store(10_000, 1e9, 20 * RECORD_SIZE)
    for i in range(500):
        store.add(FRAME, record(1000.0 + i, float(i)))
    got = speeds(store)
    assert len(got) <= 20 and got[-1] == 499.0 and store.histories[KEY].nbytes <= 20 * RECORD_SIZE


def test_a_sample_arriving_late_lands_in_its_place_among_those_on_disk(tmp_path: Path) -> None:
    disk = Segments(tmp_path, 1e9, 1e12)
    store = Store(10_000, 1e9, 20 * RECORD_SIZE, disk)
    fill(store, disk, 200)
    store.add(FRAME, record(1000.5, -1.0))
    fill(store, disk, 100, t0=2000.0)
    assert speeds(store, 1000.0, 1001.0) == [0.0, -1.0, 1.0]
    assert len(store.histories[KEY]) == 301


def test_a_restart_answers_from_the_segments_and_holds_just_its_budget(tmp_path: Path) -> None:
    disk = Segments(tmp_path, 1e9, 1e12)
    fill(Store(10_000, 1e9, 1e9, disk), disk, 300)
    disk.flush({"mark": 1})
    again = Segments(tmp_path, 1e9, 1e12)
    store = Store(10_000, 1e9, 20 * RECORD_SIZE, again)
    n, meta = again.load(store)
    assert n == 300 and meta == {"mark": 1}
    assert store.histories[KEY].nbytes <= 20 * RECORD_SIZE
    assert speeds(store) == [float(i) for i in range(300)]
    store.add(FRAME, record(5000.0, 7.0))  # new samples go to a segment of their own
    again.flush({})
    assert len(list(tmp_path.glob("seg-*.hsr"))) == 2 and speeds(store)[-1] == 7.0


def test_a_torn_last_entry_is_left_out_and_the_rest_replayed(tmp_path: Path) -> None:
    disk = Segments(tmp_path, 1e9, 1e12)
    fill(Store(10_000, 1e9, 1e9, disk), disk, 50)
    seg = next(tmp_path.glob("seg-*.hsr"))
    seg.write_bytes(seg.read_bytes()[:-5])
    again = Segments(tmp_path, 1e9, 1e12)
    store = Store(10_000, 1e9, 5 * RECORD_SIZE, again)
    n, _ = again.load(store)
    assert n == 49 and speeds(store) == [float(i) for i in range(49)]


def test_segments_are_replayed_whole_whatever_the_chunk_they_are_read_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Segments(tmp_path, 1e9, 1e12)
    fill(Store(10_000, 1e9, 1e9, disk), disk, 40)
    monkeypatch.setattr(cache_segments, "READ_CHUNK", 7)  # entries straddle every chunk boundary
    seg = next(tmp_path.glob("seg-*.hsr"))
    got = [salrecord.decode("ESS", "airFlow", raw)["data"]["speed"] for _, _, raw in cache_segments.entries(seg)]
    assert got == [float(i) for i in range(40)]


def test_samples_only_in_a_pruned_segment_are_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Segments(tmp_path, 1e9, 1.0)  # every segment but the current one is over the size limit
    store = Store(10_000, 1e9, 20 * RECORD_SIZE, disk)
    fill(store, disk, 100)
    monkeypatch.setattr(cache_segments, "SEGMENT_SECONDS", -1.0)  # the next flush rotates and prunes
    disk.flush({})
    store.forget_before(disk.oldest)
    got = speeds(store)
    assert got == [float(i) for i in range(100 - len(got), 100)] and 20 <= len(got) < 100
    assert len(list(tmp_path.glob("seg-*.hsr"))) <= 1


def test_a_disk_refusing_a_write_keeps_the_samples_in_memory(tmp_path: Path) -> None:
    disk = Segments(tmp_path, 1e9, 1e12)
    store = Store(10_000, 1e9, 10 * RECORD_SIZE, disk)
    fill(store, disk, 30)
    for i in range(30, 35):
        store.add(FRAME, record(1000.0 + i, float(i)))
    seg = disk.paths[disk.seg]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    entry = cache_segments.ENTRY.size + len(FRAME) + RECORD_SIZE
    resource.setrlimit(resource.RLIMIT_FSIZE, (seg.stat().st_size + entry * 3 // 2, limit[1]))  # the disk fills mid-write
    try:
        with pytest.raises(OSError):
            disk.flush({})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, xfsz)
    for i in range(35, 40):
        store.add(FRAME, record(1000.0 + i, float(i)))
    disk.flush({})  # a new segment takes what was buffered and what came since
    assert speeds(store) == [float(i) for i in range(40)]
    h = store.histories[KEY]
    assert all(h.samples[h.start + i] is not None for i in range(30, 35))  # never written where their references point
    again = Segments(tmp_path, 1e9, 1e12)
    restored = Store(10_000, 1e9, 10 * RECORD_SIZE, again)
    assert again.load(restored)[0] == 40 and speeds(restored) == [float(i) for i in range(40)]


def test_the_cache_server_keeps_its_budget_and_answers_old_samples(cache_server) -> None:  # noqa: ANN001
    cache_server.store.max_topic_bytes = 20 * RECORD_SIZE
    snd = Sender("listener.LATISS@test:1:0")
    for i in range(0, 400, 40):
        batch = salrecord.encode_batch([record(1000.0 + i + k, float(i + k)) for k in range(40)])
        cache_server.on_sample(snd.frames("sal.ESS.airFlow", batch))
        cache_server.flush()
    assert cache_server.store.histories[KEY].nbytes <= 60 * RECORD_SIZE
    assert speeds(cache_server.store) == [float(i) for i in range(400)]
