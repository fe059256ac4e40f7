"""The LFO annex behind one interface: where a header file goes, how it is stored, its URL.

Two backends, chosen per instance by ``annex`` in instance.yaml (``HS_ANNEX`` overrides):

- a folder (:mod:`procs.annex_local`, the embedded default): ``<annex>/<instrument>/<DAYOBS>/
  <imageName>.<fits|yaml>``, served by the publisher's HTTP server (a reissue replaces the file);
- the S3 Large File Annex (:mod:`procs.annex_s3`), ``s3://<bucket>`` or ``s3`` for
  ``rubinobs-lfa-<site>``: key ``<CSC>/header/<yyyy>/<mm>/<dd>/<CSC>-header-<imageName>[.v<N>]
  <suffix>`` (the date is the observing day, TAI - 12 h, i.e. DAYOBS), as ts_salobj's AsyncS3Bucket
  lays out the LFA.

On S3 a version 2 reissue gets its own key (``.v2`` before the suffix; version 1 has none), so an
announced object never changes. A backend's ``put`` is whole or absent and verified; a failure that
a retry may cure raises :class:`AnnexUnavailable` (an OSError: the publisher keeps the header and
retries, as for a full disk); a name that can never be stored raises :class:`protocols.names.BadName`.
The publisher's index of what it announced stays a local JSON-lines file in
``cfg.annex_folder / <instrument> / index.jsonl`` for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from protocols.config import InstanceConfig
from protocols.names import check_dayobs, check_image_name

#: File suffix and announced mimeType of each header format.
SUFFIX = {"fits": ".fits", "yaml": ".yaml"}
MIME_TYPE = {"fits": "FITS", "yaml": "YAML"}


class AnnexUnavailable(OSError):
    """The annex cannot take a file now (disk full, S3 down or slow): keep the header and retry."""


class AnnexConflict(Exception):
    """Another object with other bytes is already where this file belongs: never overwritten."""

    def __init__(self, where: str, md5: str | None):
        super().__init__(f"{where} already holds other bytes (MD5 {md5})")
        self.where = where
        self.md5 = md5


def version_tag(version: int) -> str:
    """``""`` for version 1, ``.v<N>`` for a reissue."""
    return "" if int(version) == 1 else f".v{int(version)}"


def file_name(image: str, version: int, fmt: str) -> str:
    return f"{check_image_name(image)}{version_tag(version)}{SUFFIX[fmt]}"


class Annex(Protocol):
    """What the publisher and the tools need of an annex backend."""

    kind: str  # "local" or "s3"

    def location(self, dayobs: object, image: object, version: int, fmt: str) -> str:
        """Where this header file goes (a path under the annex, or an S3 key); BadName if it cannot."""
        ...

    def url(self, loc: str) -> str:
        """The URL announced for ``loc``."""
        ...

    def put(self, loc: str, data: bytes, md5: str, fmt: str) -> None:
        """Store ``data`` at ``loc`` whole or not at all, readable at :meth:`url` when this returns.
        Raises AnnexUnavailable (retry later) or AnnexConflict (other bytes are there)."""
        ...

    def commit(self, loc: str) -> None:
        """Make a stored file durable (fsync for a folder; nothing for S3, durable on its answer)."""
        ...

    def put_side(self, loc: str, data: bytes) -> None:
        """The provenance side-car next to ``loc`` (``<stem>.prov.json``)."""
        ...

    def get(self, loc: str) -> bytes:
        """The bytes at ``loc``; FileNotFoundError if absent."""
        ...


def side_location(loc: str) -> str:
    """The side-car of a header file: same name, ``.prov.json`` instead of its suffix."""
    for suffix in SUFFIX.values():
        if loc.endswith(suffix):
            return loc[: -len(suffix)] + ".prov.json"
    return loc + ".prov.json"


def conflict_location(loc: str, md5: str) -> str:
    """Where a file goes when other bytes hold its place: its MD5's first 8 digits before the suffix."""
    for suffix in SUFFIX.values():
        if loc.endswith(suffix):
            return f"{loc[: -len(suffix)]}.{md5[:8]}{suffix}"
    return f"{loc}.{md5[:8]}"


def index_path(cfg: InstanceConfig) -> Path:
    """The publisher's annex index of this instance (for either backend)."""
    return Path(cfg.annex_folder) / cfg.instrument / "index.jsonl"


def open_annex(cfg: InstanceConfig, base_url: str = "") -> Annex:
    """The backend this instance is configured for."""
    if cfg.annex_bucket is None:
        from procs.annex_local import LocalAnnex

        return LocalAnnex(Path(cfg.annex), cfg.instrument, base_url)
    from procs.annex_s3 import S3Annex

    return S3Annex(cfg.annex_bucket, cfg.csc)


def dayobs_path(dayobs: object) -> tuple[str, str, str]:
    """(yyyy, mm, dd) of a checked DAYOBS."""
    d = check_dayobs(dayobs)
    return d[:4], d[4:6], d[6:]
