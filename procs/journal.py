"""Small durable state files for the processes (atomic JSON snapshots, bounded JSON-lines logs).

A process killed at any instant leaves either the previous or the new snapshot on disk, never a
torn one, so it resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("journal")


def write_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` so that readers see the old file or the whole new one, never a torn one
    (temporary file in the same folder, rename). With ``sync`` it is on disk when this returns
    (fsync of the file, then of the folder for the rename); otherwise call :func:`sync_file` later.
    The one durable write of the project: state files, annex files and side-cars alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:  # a leftover of a failed write is truncated and reused
        fh.write(data)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if sync:
        fsync_path(path.parent)


def sync_file(path: Path) -> None:
    """Make a file written by ``write_atomic(..., sync=False)`` durable, rename included."""
    fsync_path(path)
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any, sync: bool = True) -> None:
    """A JSON snapshot, atomically and (with ``sync``) durably (:func:`write_atomic`)."""
    write_atomic(path, json.dumps(data, separators=(",", ":")).encode(), sync)


def read_json(path: Path, default: Any) -> Any:
    """The last snapshot, or ``default`` when there is none or it cannot be read (logged)."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        log.error("state file %s unreadable (%s): starting from empty state", path, exc)
        return default


class SnapshotWriter:
    """The latest JSON snapshot of a process's state, written durably (:func:`write_atomic`) by a
    thread of its own, so that the loop handing it over never waits for the disk.

    An fsync on a disk shared with the annex and the cache took up to 80 ms: written from the
    composer's loop, it held every camera event queued behind it, endOfImageTelemetry included.
    The snapshot is encoded when it is handed over (the state as it is then); only the newest one
    waiting is written, an older one never after a newer. What a kill loses is the snapshots not yet
    on disk, which the process's restart already recovers (the composer replays camera events from
    the cache since its journal's bus time). A failed write is raised in the caller's thread at its
    next :meth:`put` or :meth:`check`, as a synchronous write's would be."""

    def __init__(self, path: Path, write: Callable[[Path, bytes], None] = write_atomic):
        self.path, self._write = path, write
        self._cond = threading.Condition()
        self._pending: bytes | None = None
        self._writing = self._closed = False
        self._error: OSError | None = None
        self.written = 0  # snapshots on disk (a coalesced one is never written)
        self._thread = threading.Thread(target=self._run, name=f"snapshot-{path.name}", daemon=True)
        self._thread.start()

    def put(self, state: Any) -> None:
        """Hand over the state to write (JSON-encoded now), replacing one not yet written."""
        raw = json.dumps(state, separators=(",", ":")).encode()
        with self._cond:
            self._raise_error()
            if self._closed:
                raise RuntimeError(f"snapshot writer of {self.path} is closed")
            self._pending = raw
            self._cond.notify_all()

    def check(self) -> None:
        """Raise the error of a failed write, if any."""
        with self._cond:
            self._raise_error()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every snapshot handed over is on disk (False on timeout); raises a failed write."""
        with self._cond:
            done = self._cond.wait_for(lambda: self._error is not None or (self._pending is None and not self._writing), timeout)
            self._raise_error()
            return done

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending, then stop the thread."""
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join(timeout)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                raw, self._pending, self._writing = self._pending, None, True
            try:
                self._write(self.path, raw)
            except OSError as exc:
                log.error("cannot write %s: %s", self.path, exc)
                with self._cond:
                    self._error, self._writing = exc, False
                    self._cond.notify_all()
                return
            with self._cond:
                self._writing = False
                self.written += 1
                self._cond.notify_all()


class AppendLog:
    """A JSON-lines log, one durable line per record (append, flush, fsync), for state that grows
    one entry at a time: appending stays cheap however long the history is. ``compact`` rewrites it
    atomically with just the records still wanted; a torn last line after a kill is skipped."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = 0

    def load(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            with open(self.path) as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        rec = None
                    if isinstance(rec, dict):
                        out.append(rec)
                    else:
                        log.warning("unreadable line of %s skipped: %.80s", self.path.name, line)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("log %s unreadable (%s): starting from empty history", self.path, exc)
        self.lines = len(out)
        return out

    def append(self, record: dict[str, Any], sync: bool = True) -> None:
        """One record; ``sync=False`` leaves its fsync to the next synced append."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        self.lines += 1

    def sync(self) -> None:
        """Make every record appended so far durable."""
        fsync_path(self.path)

    def compact(self, records: list[dict[str, Any]]) -> None:
        write_atomic(self.path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode())
        self.lines = len(records)
