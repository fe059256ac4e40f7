"""hs-get: fetch one image's FITS header by imageName from an LFO annex (a folder or a base URL).

Examples::

    hs-get AT_O_20261124_000001 --annex /data/base-annex              # writes ./AT_O_20261124_000001.fits
    hs-get AT_O_20261124_000001 --url http://127.0.0.1:5559 -o hdr.fits
    hs-get CC_O_20261124_000003 --annex /data/base-annex --print      # the primary header's cards
    hs-get AT_O_20261124_000001 --s3 s3://rubinobs-lfa-cp --format yaml  # from the S3 Large File Annex

The header is looked up in the annex index (``<instrument>/index.jsonl``, latest version of the
imageName) and its MD5 checked against the index. In a folder, an imageName missing from the index
is still found at the standard path ``<instrument>/<DAYOBS>/<imageName>.fits`` (DAYOBS is the
third ``_`` field of the name), without an MD5 to check. The instrument comes from the name's prefix
(AT LATISS, CC ComCam, MC LSSTCam) unless ``--instrument`` is given.

On S3 (``--s3 s3://BUCKET``, endpoint and credentials from ``S3_ENDPOINT_URL`` and the AWS
variables) the header is found under the LFA key of the imageName's day,
``<CSC>/header/<yyyy>/<mm>/<dd>/<CSC>-header-<imageName>[.v<N>][.<md5 prefix>]<suffix>``: the latest
version, and of a key that held other bytes the copy named by its MD5; the download is checked
against the object's ETag (its MD5). ``--format yaml`` fetches the YAML header instead of FITS.

exit status: 0 found (and verified), 1 not found / unreachable / MD5 mismatch, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable

PREFIXES = {"AT": "LATISS", "CC": "ComCam", "MC": "LSSTCam"}
CSCS = {"LATISS": "ATHeaderService", "ComCam": "CCHeaderService", "LSSTCam": "MTHeaderService"}
SUFFIXES = {"fits": ".fits", "yaml": ".yaml"}
INSTRUMENTS = tuple(PREFIXES.values())
HTTP_TIMEOUT = 15.0


class GetError(Exception):
    """The header cannot be delivered (not found, unreachable, corrupt): exit status 1."""


class UsageError(ValueError):
    """Bad arguments (e.g. an imageName whose instrument or DAYOBS cannot be told): exit status 2."""


# --------------------------------------------------------------------------------------------
# Pure lookup logic
# --------------------------------------------------------------------------------------------
def instrument_of(image: str) -> str:
    """Instrument of an imageName from its prefix: AT → LATISS, CC → ComCam, MC → LSSTCam."""
    prefix = image.split("_", 1)[0]
    if prefix not in PREFIXES:
        raise UsageError(f"cannot tell the instrument of {image!r} (prefix AT, CC or MC expected); give --instrument")
    return PREFIXES[prefix]


def dayobs_of(image: str) -> str:
    """DAYOBS of an imageName: its third ``_`` field (``AT_O_20261124_000001`` → ``20261124``)."""
    parts = image.split("_")
    if len(parts) < 4 or not re.fullmatch(r"\d{8}", parts[2]):
        raise UsageError(f"{image!r} is not an imageName like AT_O_20261124_000001 (no DAYOBS in its third field)")
    return parts[2]


def standard_path(image: str, instrument: str | None = None) -> str:
    """Path of an image's header relative to the annex root: ``<instrument>/<DAYOBS>/<imageName>.fits``."""
    return f"{instrument or instrument_of(image)}/{dayobs_of(image)}/{image}.fits"


def index_relpath(instrument: str) -> str:
    return f"{instrument}/index.jsonl"


def parse_index(text: str) -> list[dict[str, Any]]:
    """Entries of an annex index (JSON lines); unreadable lines (e.g. a line being written) are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and isinstance(e.get("imageName"), str) and "version" in e:
            out.append(e)
    return out


def version_of(entry: dict[str, Any]) -> float:
    try:
        return float(entry.get("version", 0))
    except (TypeError, ValueError):
        return 0.0


def latest_entries(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """imageName → its latest entry: highest version; for equal versions the later line wins."""
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        prev = out.get(e["imageName"])
        if prev is None or version_of(e) >= version_of(prev):
            out[e["imageName"]] = e
    return out


def find_in_index(entries: Iterable[dict[str, Any]], image: str) -> dict[str, Any] | None:
    """The latest index entry of ``image``, or None."""
    return latest_entries(e for e in entries if e.get("imageName") == image).get(image)


def entry_path(entry: dict[str, Any], instrument: str | None = None) -> str:
    """Relative path of an entry's file: its ``path``, else the path of its ``url``, else the standard path."""
    rel = entry.get("path")
    if rel:
        return str(rel).lstrip("/")
    url = entry.get("url")
    if url:
        return urllib.parse.urlparse(str(url)).path.lstrip("/")
    return standard_path(entry["imageName"], instrument)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def check_md5(data: bytes, entry: dict[str, Any], where: str) -> None:
    want = str(entry.get("md5", "")).lower()
    got = md5_hex(data)
    if want and got != want:
        raise GetError(f"{entry['imageName']}: MD5 mismatch for {where}: index says {want}, file has {got}")
    size = entry.get("byteSize")
    if isinstance(size, int) and size != len(data):
        raise GetError(f"{entry['imageName']}: size mismatch for {where}: index says {size} bytes, file has {len(data)}")


def primary_cards(data: bytes) -> list[str]:
    """The 80-character cards of a FITS file's primary header, up to and including END."""
    cards = []
    for i in range(0, len(data) - 79, 80):
        card = data[i : i + 80].decode("ascii", errors="replace")
        cards.append(card.rstrip())
        if card.startswith("END") and card[3:].strip() == "":
            return cards
    raise GetError("not a FITS file: no END card in the primary header")


def join_url(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(rel.lstrip("/"))


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------
def http_get(url: str, timeout: float = HTTP_TIMEOUT) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http to the annex)
        return resp.read()


def fetch_from_folder(annex: Path, image: str, instrument: str, fmt: str = "fits") -> tuple[bytes, str, bool]:
    """(data, where, verified) of an image's header in an annex folder."""
    idx = annex / index_relpath(instrument)
    entries = parse_index(idx.read_text()) if idx.exists() else []
    entry = find_in_index(entries, image)
    if entry is not None:
        entry = entry_for_format(entry, fmt)
        path = annex / entry_path(entry, instrument)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise GetError(f"{image} is in the annex index at {idx} but {path} cannot be read: {exc.strerror}") from None
        check_md5(data, entry, str(path))
        return data, str(path), True
    try:
        std = annex / standard_path(image, instrument)
        std = std.with_suffix(SUFFIXES[fmt])
    except UsageError:
        std = None
    if std is not None and std.is_file():
        return std.read_bytes(), str(std), False
    tail = f" (nor at {std})" if std is not None else ""
    raise GetError(f"{image} is not in the annex index at {idx}{tail}")


def entry_for_format(entry: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The index entry of one format of a header (entries list each format's file under ``files``)."""
    files = entry.get("files")
    if isinstance(files, dict) and isinstance(files.get(fmt), dict):
        return {**entry, **files[fmt]}
    if fmt != "fits":
        raise GetError(f"{entry['imageName']}: no {fmt.upper()} header in the annex index entry")
    return entry


def s3_candidates(names: Iterable[str], prefix: str, image: str, fmt: str) -> list[tuple[int, int, str]]:
    """(version, preference, key) of the keys holding ``image``'s header in format ``fmt``, best last:
    the highest version; within one, the copy named by its MD5 (written when the plain key held
    other bytes) before the plain key."""
    pattern = re.compile(re.escape(prefix + image) + r"(?:\.v(\d+))?(\.[0-9a-f]{8})?" + re.escape(SUFFIXES[fmt]))
    out = []
    for key in names:
        m = pattern.fullmatch(key)
        if m:
            out.append((int(m.group(1) or 1), 1 if m.group(2) else 0, key))
    return sorted(out)


def fetch_from_s3(bucket: str, image: str, instrument: str, fmt: str = "fits") -> tuple[bytes, str, bool]:
    """(data, where, verified) of an image's header in an S3 annex (the LFA key layout)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from procs.annex_s3 import s3_client

    csc = CSCS[instrument]
    day = dayobs_of(image)
    prefix = f"{csc}/header/{day[:4]}/{day[4:6]}/{day[6:]}/{csc}-header-"
    client = s3_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + image)
        found = s3_candidates((o["Key"] for page in pages for o in page.get("Contents", [])), prefix, image, fmt)
        if not found:
            raise GetError(f"{image}: no {fmt.upper()} header under s3://{bucket}/{prefix}{image}")
        key = found[-1][2]
        obj = client.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise GetError(f"cannot read s3://{bucket}: {exc}") from None
    etag = str(obj.get("ETag", "")).strip('"')
    where = f"s3://{bucket}/{key}"
    if "-" in etag:  # a multipart upload: the ETag is not the MD5
        return data, where, False
    check_md5(data, {"imageName": image, "md5": etag, "byteSize": len(data)}, where)
    return data, where, True


def fetch_from_url(base: str, image: str, instrument: str, fmt: str = "fits") -> tuple[bytes, str, bool]:
    """(data, where, verified) of an image's header at an annex served over HTTP."""
    idx_url = join_url(base, index_relpath(instrument))
    try:
        entries = parse_index(http_get(idx_url).decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise GetError(f"cannot read the annex index at {idx_url}: HTTP {exc.code} {exc.reason}") from None
        entries = []
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GetError(f"cannot read the annex index at {idx_url}: {reason}") from None
    entry = find_in_index(entries, image)
    if entry is None:
        raise GetError(f"{image} is not in the annex index at {idx_url}")
    entry = entry_for_format(entry, fmt)
    url = join_url(base, entry_path(entry, instrument))
    try:
        data = http_get(url)
    except urllib.error.HTTPError as exc:
        raise GetError(f"{image} is in the annex index at {idx_url} but {url} answers HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GetError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    check_md5(data, entry, url)
    return data, url, True


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hs-get",
        description="Fetch an image's FITS header by imageName from an LFO annex folder or a base URL, "
        "checking its MD5 against the annex index.",
        epilog="exit status: 0 found, 1 not found / unreachable / MD5 mismatch, 2 bad arguments.",
    )
    p.add_argument("image", metavar="IMAGENAME", help="e.g. AT_O_20261124_000001")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--annex", type=Path, metavar="DIR", help="annex root folder (holds <instrument>/index.jsonl)")
    src.add_argument("--url", metavar="URL", help="annex served over HTTP, e.g. http://127.0.0.1:5559")
    src.add_argument("--s3", metavar="S3URL", help="S3 annex, s3://BUCKET (endpoint from S3_ENDPOINT_URL)")
    p.add_argument("--format", choices=("fits", "yaml"), default="fits", help="header format (default fits)")
    p.add_argument("--instrument", choices=INSTRUMENTS, help="default: from the imageName prefix (AT, CC, MC)")
    p.add_argument("-o", "--output", metavar="OUT", help="file to write (default ./IMAGENAME.fits; - for stdout)")
    p.add_argument(
        "--print",
        "--header-only-print",
        dest="print_cards",
        action="store_true",
        help="print the primary header's cards instead of writing the file (unless -o is given too)",
    )
    return p


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    image = args.image.strip()
    if not image or "/" in image or image.startswith("."):
        parser.error(f"{args.image!r} is not an imageName")
    if args.url and not urllib.parse.urlparse(args.url).scheme.startswith("http"):
        parser.error(f"--url {args.url!r}: expected http://HOST:PORT")
    try:
        instrument = args.instrument or instrument_of(image)
    except UsageError as exc:
        parser.error(str(exc))
    try:
        if args.s3 is not None:
            bucket = args.s3[len("s3://") :].strip("/") if args.s3.startswith("s3://") else ""
            if not bucket:
                parser.error(f"--s3 {args.s3!r}: expected s3://BUCKET")
            data, where, verified = fetch_from_s3(bucket, image, instrument, args.format)
        elif args.annex is not None:
            if not args.annex.is_dir():
                print(f"hs-get: annex folder {args.annex} does not exist", file=sys.stderr)
                return 1
            data, where, verified = fetch_from_folder(args.annex, image, instrument, args.format)
        else:
            data, where, verified = fetch_from_url(args.url, image, instrument, args.format)
        if not verified:
            print(f"hs-get: warning: {image} is not in the annex index; found at {where} (MD5 not checked)", file=sys.stderr)
        if args.print_cards and args.format == "yaml":
            print(data.decode("utf-8", errors="replace"), end="")
        elif args.print_cards:
            for card in primary_cards(data):
                print(card)
        if args.output == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        elif args.output or not args.print_cards:
            out = Path(args.output or f"{image}{SUFFIXES[args.format]}")
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, out)
            print(f"hs-get: {image}: {len(data)} bytes, md5 {md5_hex(data)} from {where} -> {out}", file=sys.stderr)
    except GetError as exc:
        print(f"hs-get: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hs-get: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
