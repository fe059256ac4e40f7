"""Small durable state files for the processes (atomic JSON snapshots, bounded JSON-lines logs).

A process killed at any instant leaves either the previous or the new snapshot on disk, never a
torn one, so it resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
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


def write_json_atomic(path: Path, data: Any) -> None:
    """A JSON snapshot, durably and atomically (:func:`write_atomic`)."""
    write_atomic(path, json.dumps(data, separators=(",", ":")).encode())


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

    def compact(self, records: list[dict[str, Any]]) -> None:
        write_atomic(self.path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode())
        self.lines = len(records)
