"""SnapshotWriter: a process's state snapshot written durably by a thread of its own (real files)."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

from procs.journal import SnapshotWriter, read_json, write_atomic


class HeldDisk:
    """A write function whose disk answers only when released; it records what it wrote."""

    def __init__(self) -> None:
        self.writing, self.back = threading.Event(), threading.Event()
        self.written: list[dict] = []

    def __call__(self, path: Path, raw: bytes) -> None:
        self.writing.set()
        self.back.wait(60)
        write_atomic(path, raw)
        self.written.append(json.loads(raw))


def test_the_latest_state_reaches_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "state" / "composer.json"
    writer = SnapshotWriter(path)
    state = {"open": {"AT_O_20261125_000007": {"events": {}}}, "bus_time": 1.5}
    writer.put(state)
    state["bus_time"] = 99.0  # changed after it was handed over: the snapshot is of the state then
    writer.close()
    assert read_json(path, None) == {"open": {"AT_O_20261125_000007": {"events": {}}}, "bus_time": 1.5}
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"


def test_snapshots_waiting_behind_a_slow_write_are_coalesced_never_reordered(tmp_path: Path) -> None:
    path = tmp_path / "composer.json"
    disk = HeldDisk()
    writer = SnapshotWriter(path, write=disk)
    try:
        writer.put({"n": 1})
        assert disk.writing.wait(30)
        for n in range(2, 6):
            writer.put({"n": n})  # returns while the disk is held
        assert not writer.flush(timeout=0.05)
        disk.back.set()
        assert writer.flush(timeout=30)
    finally:
        disk.back.set()
        writer.close()
    assert disk.written == [{"n": 1}, {"n": 5}]
    assert writer.written == 2 and read_json(path, None) == {"n": 5}


def test_a_failed_write_stops_the_caller_at_its_next_call(tmp_path: Path) -> None:
    def full_disk(path: Path, raw: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    writer = SnapshotWriter(tmp_path / "composer.json", write=full_disk)
    writer.put({"n": 1})
    with pytest.raises(OSError, match="No space left"):
        writer.flush(timeout=30)
    with pytest.raises(OSError, match="No space left"):
        writer.check()
    with pytest.raises(OSError, match="No space left"):
        writer.put({"n": 2})
    assert not (tmp_path / "composer.json").exists()


def test_an_unwritable_folder_is_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    writer = SnapshotWriter(blocker / "composer.json")
    writer.put({"n": 1})
    with pytest.raises(OSError):
        writer.close()


def test_a_closed_writer_takes_no_more_snapshots(tmp_path: Path) -> None:
    writer = SnapshotWriter(tmp_path / "composer.json")
    writer.put({"n": 1})
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.put({"n": 2})
    assert read_json(tmp_path / "composer.json", None) == {"n": 1}
