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


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            fh.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.lines = len(records)
