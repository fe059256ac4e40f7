"""The annex as a local folder (the embedded default), served over HTTP by the publisher.

``<annex>/<instrument>/<DAYOBS>/<imageName>.<fits|yaml>`` (a reissue replaces the file; each
version is announced, and the index records its MD5); every component is checked
(:mod:`protocols.names`) and the resolved path must stay under the annex. A file is written to a
temporary name and renamed (whole or absent for every reader), and made durable by :meth:`commit`
(fsync of file and folder) after its announcement.
"""

from __future__ import annotations

import errno
from pathlib import Path

from procs.annex import AnnexUnavailable, file_name, side_location
from procs.journal import sync_file, write_atomic
from protocols.names import BadName, check_dayobs, inside

#: Write errors that no retry can cure: the header is set aside with the reason instead.
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})


class LocalAnnex:
    kind = "local"

    def __init__(self, root: Path, instrument: str, base_url: str = ""):
        self.root = Path(root)
        self.instrument = instrument
        self.base_url = base_url

    def location(self, dayobs: object, image: object, version: int, fmt: str) -> str:
        """The standard path: a reissue replaces the file in place (atomically), so the latest
        version is always where ``hs-get`` and the archiver look for it."""
        return f"{self.instrument}/{check_dayobs(dayobs)}/{file_name(image, 1, fmt)}"  # type: ignore[arg-type]

    def path(self, loc: str) -> Path:
        return inside(self.root, loc)

    def url(self, loc: str) -> str:
        return f"{self.base_url}/{loc}"

    def put(self, loc: str, data: bytes, md5: str, fmt: str) -> None:
        path = self.path(loc)
        try:
            write_atomic(path, data, sync=False)  # complete for every reader now; on disk at commit
        except OSError as exc:
            if exc.errno in PERMANENT_ERRNOS:
                raise BadName(f"cannot ever be written to {loc[:200]}: {exc.strerror}") from None
            raise

    def commit(self, loc: str) -> None:
        sync_file(self.path(loc))

    def put_side(self, loc: str, data: bytes) -> None:
        write_atomic(self.path(side_location(loc)), data)

    def get(self, loc: str) -> bytes:
        return self.path(loc).read_bytes()


__all__ = ["LocalAnnex", "AnnexUnavailable", "PERMANENT_ERRNOS"]
