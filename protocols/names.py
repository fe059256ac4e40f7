"""The names that become paths or object keys: imageName and DAYOBS, checked in one place.

Both come from outside (a camera event's ``imageName`` and ``imageDate``, a header PUSHed to the
publisher), and both end up as components of an annex path
(``<annex>/<instrument>/<DAYOBS>/<imageName>.fits``) or an S3 key. The composer, the publisher, the
annex backends and the tools all use these definitions, so a name accepted by one is accepted by
all, and nothing that could climb out of the annex (``..``, ``/``, NUL, an absurd length) is ever
joined to a path.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

#: An imageName (``AT_O_20261124_000001``): letters, digits, ``_ . -``, not starting with a
#: punctuation mark, at most 64 characters, and never containing ``..``.
IMAGE_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: DAYOBS: eight digits, YYYYMMDD.
DAYOBS = re.compile(r"[0-9]{8}")


class BadName(ValueError):
    """A name from outside that cannot become a path component; the message says why."""


def image_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid imageName, or None when it is."""
    if not isinstance(name, str):
        return f"imageName {name!r} is not a string"
    if not IMAGE_NAME.fullmatch(name):
        return f"imageName {name[:80]!r} does not match {IMAGE_NAME.pattern}"
    return None


def dayobs_problem(dayobs: object) -> str | None:
    """Why ``dayobs`` is not a valid DAYOBS (8 digits forming a calendar date), or None."""
    text = str(dayobs) if isinstance(dayobs, int) and not isinstance(dayobs, bool) else dayobs
    if not isinstance(text, str) or not DAYOBS.fullmatch(text):
        return f"DAYOBS {str(dayobs)[:80]!r} is not 8 digits (YYYYMMDD)"
    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return f"DAYOBS {text!r} is not a calendar date"
    return None


def check_image_name(name: object) -> str:
    """``name`` if it is a valid imageName; :class:`BadName` otherwise."""
    problem = image_name_problem(name)
    if problem:
        raise BadName(problem)
    return str(name)


def check_dayobs(dayobs: object) -> str:
    """``dayobs`` as its 8-digit string if valid; :class:`BadName` otherwise."""
    problem = dayobs_problem(dayobs)
    if problem:
        raise BadName(problem)
    return str(dayobs)


def inside(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, refused (:class:`BadName`) unless it stays under ``root``: the last
    line of defence behind the name checks (symlinks included)."""
    base = root.resolve()
    path = (base / rel).resolve()
    if path != base and base not in path.parents:
        raise BadName(f"path {rel[:120]!r} leaves the annex {base}")
    return path
