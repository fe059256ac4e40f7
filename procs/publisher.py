"""hs-publisher: the only writer of the LFO annex; serves it over HTTP and announces each file.

PULLs finished headers from the composer, writes ``<annex>/<instrument>/<DAYOBS>/<imageName>.fits``
atomically (temporary file, rename), records it in the annex index, announces it on DDS with
largeFileObjectAvailable (url, generator, version, byteSize, checkSum = MD5, mimeType, id), then
makes it durable (fsync of file and folder), writes its provenance side-car
(``<imageName>.prov.json``) and acknowledges it to the composer. A process that dies at any point
leaves a whole file or none; a machine that crashes between announcement and fsync is covered by
the composer, which keeps every unacknowledged header and sends it again. Each imageName and
version is written and announced once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zmq

from header.fitsfile import encode_file_from_cards
from procs.common import Counters, GcPacer, Stop, base_parser, setup
from procs.journal import AppendLog
from protocols import sal
from protocols.config import InstanceConfig
from protocols.csc_state import ErrorCode, fault_frames
from protocols.envelope import EnvelopeError, Sender, decode, sender_id, tai_now

log = logging.getLogger("publisher")
MIME = "application/fits"
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def atomic_write(path: Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` so that readers see either nothing or the whole file; with ``sync`` it is
    on disk when this returns, otherwise call :func:`sync_file` later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if sync:
        _fsync(path.parent)


def sync_file(path: Path) -> None:
    """Make a file written by ``atomic_write(..., sync=False)`` durable, rename included."""
    _fsync(path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    """fsync a file or a folder by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def header_file(payload: dict[str, Any]) -> tuple[bytes, str]:
    """The LFO file of one header payload and its MD5; refuses anything that is not a header."""
    image = payload["imageName"]
    if not IMAGE_NAME.fullmatch(str(image)):
        raise ValueError(f"{image!r} is not a valid imageName")
    cards = [h["cards"] for h in payload["hdus"]]
    if not cards or not cards[0] or not str(cards[0][0]).startswith("SIMPLE  ="):
        raise ValueError(f"{image}: not a header (no HDU, or no SIMPLE card first)")
    try:
        if any(set(map(len, hdu)) != {80} for hdu in cards):
            raise ValueError("a card is not 80 characters long")
        data = encode_file_from_cards(cards)
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{image}: not a header (cards that are not 80-character ASCII images: {exc})") from None
    return data, hashlib.md5(data).hexdigest()


class AnnexIndex:
    """imageName -> latest entry (path, version, md5, url, announced); an append-only JSON-lines file."""

    def __init__(self, path: Path):
        self.path = path
        self.log = AppendLog(path)
        self.entries: dict[str, dict[str, Any]] = {}
        for e in self.log.load():
            if "imageName" in e:
                self.entries[e["imageName"]] = e
            else:
                log.warning("index line without imageName skipped: %.80s", e)

    def add(self, entry: dict[str, Any], sync: bool = True) -> None:
        """Append one entry; ``sync=False`` leaves the fsync to the next synced entry (the
        composer keeps an unacknowledged header until the synced one exists, and sends it again)."""
        self.log.append(entry, sync)
        self.entries[entry["imageName"]] = entry


class Announcer:
    """Writes largeFileObjectAvailable for the instance's CSC on DDS."""

    def __init__(self, cfg: InstanceConfig):
        sal.ensure_loopback_dds()
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.topic import Topic

        self.csc = cfg.csc
        st = sal.get_topic(cfg.csc, "largeFileObjectAvailable")
        qos = sal.qos_for(st.kind)
        self.dp = DomainParticipant(cfg.dds_domain)
        self.writer = DataWriter(self.dp, Topic(self.dp, st.dds_name, sal.idl_class(cfg.csc, "largeFileObjectAvailable"), qos=qos), qos=qos)
        self.seq = 0
        self.sample = sal.make_sample(
            cfg.csc, "largeFileObjectAvailable", 0, generator=cfg.csc, mimeType=MIME, private_identity=cfg.csc
        )

    def announce(self, url: str, version: int, size: int, md5: str, image: str) -> None:
        """One largeFileObjectAvailable; the sample is built once and refilled (it is on the
        announcement's critical path)."""
        self.seq += 1
        s = self.sample
        s.url, s.version, s.byteSize, s.checkSum, s.id = url, float(version), size, md5, image
        s.private_sndStamp, s.private_seqNum = tai_now(), self.seq
        self.writer.write(s)


class AnnexHandler(SimpleHTTPRequestHandler):
    """The annex's files, plus ``GET /index/<imageName>``: the latest index entry as JSON."""

    index: "AnnexIndex | None" = None

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path.startswith("/index/") and self.index is not None:
            name = self.path[len("/index/") :].strip("/")
            entry = self.index.entries.get(name)
            body = json.dumps(entry if entry else {"error": f"{name} is not in the annex index"}).encode()
            self.send_response(200 if entry else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http: " + format, *args)


def serve_annex(root: Path, port: int, index: "AnnexIndex | None" = None) -> ThreadingHTTPServer:
    root.mkdir(parents=True, exist_ok=True)
    handler_cls = type("InstanceAnnexHandler", (AnnexHandler,), {"index": index})
    handler = functools.partial(handler_cls, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="annex-http", daemon=True).start()
    return server


class Publisher:
    def __init__(self, cfg: InstanceConfig):
        self.cfg = cfg
        self.root = Path(cfg.annex)
        self.index = AnnexIndex(self.root / cfg.instrument / "index.jsonl")
        self.counts = Counters()
        ctx = zmq.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(cfg.endpoints.publisher_pull)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(cfg.endpoints.publisher_pub)
        self.sender = Sender(sender_id("publisher", cfg.instrument))
        self.http = serve_annex(self.root, cfg.endpoints.http_port, self.index)
        self.base_url = f"http://127.0.0.1:{cfg.endpoints.http_port}"
        self.announcer = Announcer(cfg)
        self.pending: list[dict[str, Any]] = []  # headers whose write failed: retried, never dropped

    def relpath(self, dayobs: str, image: str) -> str:
        return f"{self.cfg.instrument}/{dayobs}/{image}.fits"

    def publish(self, payload: dict[str, Any]) -> None:
        """Write, index and announce one header version, exactly once per imageName and version.

        The index records the file before the announcement and again once announced, so a
        publisher killed in between announces on restart what it had not, and nothing twice.
        """
        image = payload["imageName"]
        version = int(payload["version"])
        t0 = time.perf_counter()
        data, md5 = header_file(payload)
        prev = self.index.entries.get(image)
        if prev and int(prev["version"]) > version or (prev and int(prev["version"]) == version and prev.get("announced")):
            self.counts["duplicates"] += 1
            log.info("%s v%d already published (v%s): acknowledged, not announced again", image, version, prev["version"])
            self.pub.send_multipart(self.sender.frames(f"ctl.announced.{image}", prev))
            return
        rel = self.relpath(str(payload["dayobs"]), image)
        path = self.root / rel
        atomic_write(path, data, sync=False)  # complete for every reader now; on disk below
        url = f"{self.base_url}/{rel}"
        entry = {
            "imageName": image,
            "version": version,
            "path": rel,
            "url": url,
            "md5": md5,
            "byteSize": len(data),
            "complete": bool(payload.get("complete", True)),
            "announced": None,
        }
        self.index.add(entry, sync=False)
        t1 = time.perf_counter()
        self.announcer.announce(url, version, len(data), md5, image)
        t2 = time.perf_counter()
        # Durable before the acknowledgement: until then the composer keeps the header and sends it
        # again after a crash of this machine, and the publisher writes and announces it again.
        sync_file(path)
        atomic_write(path.with_suffix(".prov.json"), json.dumps(payload.get("provenance", {}), indent=1).encode())
        entry = dict(entry, announced=tai_now())
        self.index.add(entry)
        self.pub.send_multipart(self.sender.frames(f"ctl.announced.{image}", entry))
        self.counts["announced"] += 1
        log.info(
            "%s v%d written (%d bytes, md5 %s) and announced at %s; %.1f ms to write, %.1f ms to announce",
            image, version, len(data), md5, url, (t1 - t0) * 1000, (t2 - t1) * 1000,
        )  # fmt: skip

    def run(self, stop: Stop) -> None:
        log.info("publisher up: annex %s, HTTP %s", self.root, self.base_url)
        last_retry = last_status = time.monotonic()
        pacer = GcPacer()
        while not stop.requested:
            if time.monotonic() - last_retry > 5.0:
                last_retry = time.monotonic()
                if self.pending:
                    self.retry_pending()
            if time.monotonic() - last_status > 1.0:
                last_status = time.monotonic()
                self.pub.send_multipart(
                    self.sender.frames(
                        f"ctl.status.publisher.{self.cfg.instrument}",
                        {"counts": self.counts.as_dict(), "pending": len(self.pending)},
                    )
                )
            if not self.pull.poll(200):
                pacer.step(quiet=True)
                continue
            pacer.step(quiet=False)
            frames = self.pull.recv_multipart()
            try:
                msg = decode(frames)
                key = (msg.payload.get("imageName"), msg.payload.get("version"))
                if any((p.get("imageName"), p.get("version")) == key for p in self.pending):
                    continue  # already kept for the next retry cycle
                self.publish(msg.payload)
            except (EnvelopeError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                self.counts["bad_messages"] += 1
                log.error("header message rejected: %s", exc)
            except OSError as exc:
                self.counts["write_errors"] += 1
                key = (msg.payload.get("imageName"), msg.payload.get("version"))
                if all((p.get("imageName"), p.get("version")) != key for p in self.pending):
                    self.pending.append(msg.payload)
                log.error("cannot write %s (kept, retried every 5 s): %s", msg.payload.get("imageName"), exc)
                self.pub.send_multipart(fault_frames(self.sender, self.cfg.instrument, ErrorCode.ANNEX_UNWRITABLE, f"annex unwritable: {exc}"))
        self.http.shutdown()

    def retry_pending(self) -> None:
        retry, self.pending = self.pending, []
        for payload in retry:
            try:
                self.publish(payload)
            except OSError as exc:
                self.pending.append(payload)
                log.error("still cannot write %s: %s", payload.get("imageName"), exc)


def main(argv: list[str] | None = None) -> None:
    p = base_parser("hs-publisher", __doc__.splitlines()[0])
    args = p.parse_args(argv)
    cfg = setup(args, "hs-publisher")
    Publisher(cfg).run(Stop())


if __name__ == "__main__":
    main()
