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
