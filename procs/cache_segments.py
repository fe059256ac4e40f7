"""The cache's history on disk: binary segments the cache appends every second, rotated and pruned
by age and total size, replayed at start so a restart loses at most the last second.

They are also where the cache keeps what does not fit its memory: every record written here gets
a reference (its segment and offset), and a history over its in-memory budget keeps just that
reference for its oldest samples, read back with one ``pread`` when a header asks for them. So
the memory a topic takes is bounded by ``cache_max_topic_mb`` while the history the cache can
answer from stays ``cache_max_age`` and ``cache_max_disk_mb`` long.

A segment is a sequence of entries ``<uint16 topic length><uint32 record length><topic><record>``
(little-endian), the topic frame and SAL record exactly as the listener sent them; a torn last
entry after a kill is ignored.

Neither the segments nor ``meta.json`` (the listener sequence numbers applied, the bus outages
recorded) are fsync'd: both outlive a killed process in the page cache, and syncing the snapshot
alone would only make it claim samples a crashed machine lost. An fsync every second in the
cache's loop once held a header's collect behind the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from procs.journal import read_json, write_json_atomic

log = logging.getLogger("cache")
SEGMENT_SECONDS = 600.0  # a new segment every 10 minutes
ENTRY = struct.Struct("<HI")
OFFSET_BITS = 40  # a reference is ``segment << OFFSET_BITS | offset``: segments up to 1 TB
OFFSET_MASK = (1 << OFFSET_BITS) - 1
NO_REF = -1  # a record not (yet) in any segment
READ_CHUNK = 4 << 20  # bytes read at a time when a segment is replayed


class Sink(Protocol):
    """What segments are replayed into (the cache's store)."""

    def add(self, topic_frame: bytes, raw: bytes, ref: int = NO_REF) -> Any: ...


def entries(path: Path) -> Iterator[tuple[int, bytes, bytes]]:
    """(offset of the record, topic frame, record) of each whole entry of a segment, read in chunks
    so a long segment is never held in memory whole; a torn last entry ends the iteration."""
    with open(path, "rb") as fh:
        buf, base, pos = b"", 0, 0  # buf holds the file from offset ``base``
        while True:
            while pos + ENTRY.size <= len(buf):
                lt, lr = ENTRY.unpack_from(buf, pos)
                end = pos + ENTRY.size + lt + lr
                if end > len(buf):
                    break
                yield base + end - lr, buf[pos + ENTRY.size : end - lr], buf[end - lr : end]
                pos = end
            chunk = fh.read(READ_CHUNK)
            if not chunk:
                return
            buf, base, pos = buf[pos:] + chunk, base + pos, 0


class Segments:
    """Appends records to the current segment and reads them back by reference.

    A reference is given when the record is added, before it is written (``add``); it becomes
    ``readable`` once the flush that writes it succeeded. A flush that fails cuts what it wrote
    off and starts a new segment for the buffered entries, so a reference into the failed one's
    unwritten end never becomes readable and its record stays in memory."""

    def __init__(self, folder: Path, max_age: float, max_bytes: float):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.buffer: list[bytes] = []
        self.paths: dict[int, Path] = {}  # segment number -> file, oldest first
        self.written: dict[int, int] = {}  # segment number -> bytes of it written
        self.fds: dict[int, int] = {}  # segment number -> descriptor open for reading
        self.seg = -1
        self.tail = 0  # offset in the current segment where the next entry goes
        self.opened = 0.0

    def _start_segment(self) -> None:
        """Entries buffered and those to come go to a new segment."""
        now = time.time()
        self.seg += 1
        self.paths[self.seg] = self.folder / f"seg-{now:017.6f}.hsr"
        self.written[self.seg] = 0
        self.tail = sum(map(len, self.buffer))
        self.opened = now

    def add(self, topic_frame: bytes, raw: bytes) -> int:
        """Buffer one entry for the next flush; returns the record's reference."""
        if self.seg < 0:
            self._start_segment()
        self.buffer += (ENTRY.pack(len(topic_frame), len(raw)), topic_frame, raw)
        at = self.tail + ENTRY.size + len(topic_frame)
        self.tail = at + len(raw)
        return self.seg << OFFSET_BITS | at

    def readable(self, ref: int, length: int) -> bool:
        """Whether the record behind ``ref`` is written (a flush wrote it) and its segment kept."""
        return ref >= 0 and (ref & OFFSET_MASK) + length <= self.written.get(ref >> OFFSET_BITS, -1)

    def read(self, ref: int, length: int) -> bytes | None:
        """The record behind ``ref``, or None when its segment is gone or cannot be read (logged)."""
        seg = ref >> OFFSET_BITS
        try:
            fd = self.fds.get(seg)
            if fd is None:
                fd = self.fds[seg] = os.open(self.paths[seg], os.O_RDONLY)
            data = os.pread(fd, length, ref & OFFSET_MASK)
        except (KeyError, OSError) as exc:
            log.warning("sample kept on disk not readable (segment %d): %s", seg, exc)
            return None
        return data if len(data) == length else None

    def flush(self, meta: dict[str, Any]) -> None:
        """Write what was added since the last flush, rotate the segment every SEGMENT_SECONDS,
        and snapshot ``meta``. Raises OSError when the disk refuses (the entries stay buffered)."""
        if self.seg < 0:
            self._start_segment()
        if self.buffer:
            data = b"".join(self.buffer)
            path = self.paths[self.seg]
            try:
                with open(path, "ab") as fh:
                    fh.write(data)
            except OSError:
                with contextlib.suppress(OSError):  # what got written would be replayed twice
                    os.truncate(path, self.written[self.seg])
                self._start_segment()
                raise
            self.written[self.seg] += len(data)
            self.buffer.clear()
        if time.time() - self.opened > SEGMENT_SECONDS:
            self._start_segment()
            self.prune()
        write_json_atomic(self.folder / "meta.json", meta, sync=False)  # as durable as the segments it describes

    @property
    def oldest(self) -> int:
        """Number of the oldest segment still kept: references into earlier ones are stale."""
        return min(self.paths, default=self.seg)

    def prune(self) -> None:
        """Delete the segments past ``max_age``, and the oldest while all exceed ``max_bytes``
        (never the current one)."""
        now = time.time()
        sizes = {n: p.stat().st_size for n, p in self.paths.items() if n != self.seg and p.exists()}
        total = sum(sizes.values())
        for n, p in list(self.paths.items()):
            if n == self.seg:
                continue
            if n not in sizes or now - p.stat().st_mtime > self.max_age or total > self.max_bytes:
                total -= sizes.get(n, 0)
                self._forget(n)
                p.unlink(missing_ok=True)
        for old in self.folder.glob("seg-*.jsonl"):  # JSON segments of an earlier release: unreadable now
            old.unlink(missing_ok=True)

    def _forget(self, seg: int) -> None:
        del self.paths[seg]
        self.written.pop(seg, None)
        fd = self.fds.pop(seg, None)
        if fd is not None:
            os.close(fd)

    def load(self, sink: Sink) -> tuple[int, dict[str, Any]]:
        """At start: replay every segment on disk into ``sink``, each record with its reference;
        the next records go to a new segment. Returns the number replayed and the last ``meta``."""
        for path in sorted(self.folder.glob("seg-*.hsr")):
            self.seg += 1
            self.paths[self.seg] = path
            self.written[self.seg] = path.stat().st_size  # a torn end is never referenced
        self.prune()
        n = 0
        for seg, path in list(self.paths.items()):
            for at, topic, raw in entries(path):
                try:
                    sink.add(topic, raw, seg << OFFSET_BITS | at)
                    n += 1
                except (ValueError, KeyError) as exc:
                    log.warning("unreadable entry in %s skipped: %s", path.name, exc)
        self._start_segment()
        return n, read_json(self.folder / "meta.json", {})

