"""hs-mirror on S3: copy the summit LFA bucket's headers to a base bucket or folder, MD5-checked.

Used by ``hs-mirror --from-s3 s3://SUMMIT_BUCKET --to s3://BASE_BUCKET|BASE_FOLDER``. Every pass
lists the instance's header keys in the summit bucket (``<CSC>/header/``), and copies each key the
base lacks: the download's MD5 must equal the summit object's ETag (single-part uploads), the upload
carries Content-MD5 and ``If-None-Match: *`` (a base object is never replaced; one with other bytes
is reported), a folder copy is written atomically at ``<folder>/<key>``. A pass that cannot reach
either side copies what it can and the next pass (``--resync`` seconds later) catches up, so a link
outage costs nothing but delay. Keys that do not have the LFA layout are refused (never a path
outside the base folder).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

from procs.annex_s3 import error_code, md5_b64, s3_client
from procs.common import Counters, Stop
from procs.journal import write_atomic
from protocols.names import inside

log = logging.getLogger("mirror.s3")


def key_pattern(csc: str) -> re.Pattern[str]:
    """The keys the Header Service writes for ``csc`` (header files and side-cars)."""
    return re.compile(rf"{re.escape(csc)}/header/\d{{4}}/\d{{2}}/\d{{2}}/{re.escape(csc)}-header-(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]*")


class BucketMirror:
    """One summit bucket's headers of one CSC, copied to a base bucket or folder."""

    def __init__(self, csc: str, src_bucket: str, dest: str, src_client: Any = None, dest_client: Any = None):
        self.csc = csc
        self.src_bucket = src_bucket
        self.src = src_client or s3_client()
        self.prefix = f"{csc}/header/"
        self.pattern = key_pattern(csc)
        self.dest_bucket = dest[len("s3://") :].strip("/") if dest.startswith("s3://") else None
        self.dest_root = None if self.dest_bucket else Path(dest)
        self.dest = (dest_client or s3_client()) if self.dest_bucket else None
        self.copied: dict[str, str] = {}  # key -> MD5 held by the base
        self.failed: dict[str, str] = {}  # key -> last error
        self.counts = Counters()

    def source_keys(self) -> dict[str, str]:
        """key -> MD5 (ETag) of every header object in the summit bucket."""
        out: dict[str, str] = {}
        for page in self.src.get_paginator("list_objects_v2").paginate(Bucket=self.src_bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if not self.pattern.fullmatch(key):
                    self.counts["bad_keys"] += 1
                    log.error("summit key %.200r has not the LFA layout: not copied", key)
                    continue
                out[key] = str(obj.get("ETag", "")).strip('"')
        return out

    def base_md5(self, key: str) -> str | None:
        if key in self.copied:
            return self.copied[key]
        if self.dest_bucket:
            try:
                return str(self.dest.head_object(Bucket=self.dest_bucket, Key=key)["ETag"]).strip('"')
            except Exception as exc:  # noqa: BLE001 (botocore's ClientError: absent or unreachable)
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        path = inside(self.dest_root, key)
        return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None

    def copy(self, key: str, md5: str) -> None:
        data = self.src.get_object(Bucket=self.src_bucket, Key=key)["Body"].read()
        got = hashlib.md5(data).hexdigest()
        if "-" not in md5 and got != md5:
            self.counts["md5_mismatch"] += 1
            raise ValueError(f"MD5 mismatch: summit ETag {md5}, downloaded {got}")
        if self.dest_bucket:
            try:
                self.dest.put_object(Bucket=self.dest_bucket, Key=key, Body=data, ContentMD5=md5_b64(got), IfNoneMatch="*")
            except Exception as exc:  # noqa: BLE001 (botocore's ClientError)
                if error_code(exc) not in ("PreconditionFailed", "412"):
                    raise
                there = self.base_md5(key)
                if there != got:
                    self.counts["conflicts"] += 1
                    raise ValueError(f"base already holds other bytes (MD5 {there}): not replaced") from None
        else:
            write_atomic(inside(self.dest_root, key), data)
        self.copied[key] = got
        self.counts["copied"] += 1
        log.info("%s copied (%d bytes, md5 %s)", key, len(data), got)

    def sync(self) -> list[str]:
        """One pass; the problems left (empty when the base holds every summit header, verified)."""
        try:
            keys = self.source_keys()
        except Exception as exc:  # noqa: BLE001 (botocore: summit unreachable)
            return [f"summit bucket {self.src_bucket} unreachable: {exc}"]
        problems = []
        for key, md5 in sorted(keys.items()):
            try:
                held = self.base_md5(key)
                if held is not None and ("-" in md5 or held == md5):
                    self.copied[key] = held
                    self.failed.pop(key, None)
                    continue
                self.copy(key, md5)
                self.failed.pop(key, None)
            except Exception as exc:  # noqa: BLE001 (one key's failure never stops the pass)
                self.failed[key] = str(exc)
                problems.append(f"{key}: {exc}")
        return problems


def run(m: BucketMirror, stop: Stop, once: bool, resync: float) -> int:
    """``once``: one pass, 0 when complete; otherwise a pass every ``resync`` s until stopped."""
    while True:
        problems = m.sync()
        for p in problems:
            log.error("%s", p)
        log.info("pass done: %d copied in total, %d problems", m.counts["copied"], len(problems))
        if once:
            return 0 if not problems else 1
        end = time.monotonic() + resync
        while not stop.requested and time.monotonic() < end:
            time.sleep(0.1)
        if stop.requested:
            return 0
