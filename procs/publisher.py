"""hs-publisher: the only writer of the LFO annex; serves it over HTTP and announces each file.

PULLs finished headers from the composer, stores each in the instance's annex backend
(:mod:`procs.annex`: a folder, ``<annex>/<instrument>/<DAYOBS>/<imageName>.fits`` written atomically,
or the S3 Large File Annex, uploaded whole and verified) in the formats of ``lfo_format`` (FITS,
YAML or both), records it in the annex index, announces each file on DDS with
largeFileObjectAvailable (url, generator, version, byteSize, checkSum = MD5, mimeType FITS or YAML,
id), then makes it durable (fsync of file and folder), writes its provenance side-car
(``<imageName>.prov.json``) and acknowledges it to the composer. The durability steps run on a
thread of their own (:mod:`procs.background`), so a header arriving meanwhile is announced without
waiting for the previous one's fsyncs. A process that dies at any point
leaves a whole file or none; a machine that crashes between announcement and fsync is covered by
the composer, which keeps every unacknowledged header and sends it again. Each imageName and
version is written and announced once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zmq

from header.fitsfile import encode_file_from_cards
from header.yamlheader import payload_yaml
from procs.annex import MIME_TYPE, AnnexConflict, conflict_location, index_path, open_annex
from procs.annex_local import LocalAnnex
from procs.background import BackgroundWorker
from procs.common import Counters, GcPacer, Stop, run_process
from procs.journal import AppendLog, write_atomic
from protocols import sal
from protocols.config import InstanceConfig
from protocols.csc_state import ErrorCode, fault_frames, warning_frames
from protocols.envelope import EnvelopeError, Sender, decode, sender_id, tai_now
from protocols.messages import Announced, ProcessStatus, Rejected
from protocols.names import BadName, check_image_name, image_name_problem

log = logging.getLogger("publisher")
RETRY_S = 5.0  # s between two attempts at the headers kept while the annex is unwritable
HTTP_TIMEOUT_S = 10.0  # s an HTTP connection may stay silent (idle keep-alive, half-open, slowloris)
HTTP_BACKLOG = 256  # pending connections the HTTP listener queues (the stdlib default is 5)


@dataclass
class AnnouncedHeader:
    """A header stored, indexed and announced, on its way to durable and acknowledged."""

    payload: dict[str, Any]
    entry: Announced
    locs: list[str]
    write_ms: float
    announce_ms: float
    side_car_error: str | None = None


class SetAside(ValueError):
    """A header that can never be written where it belongs (bad name, bad path): kept apart with the reason."""


def header_file(payload: dict[str, Any]) -> tuple[bytes, str]:
    """The LFO file of one header payload and its MD5; refuses anything that is not a header."""
    image = payload["imageName"]
    cards = [h["cards"] for h in payload["hdus"]]
    if not cards or not cards[0] or not str(cards[0][0]).startswith("SIMPLE  ="):
        raise ValueError(f"{str(image)[:80]}: not a header (no HDU, or no SIMPLE card first)")
    try:
        if any(set(map(len, hdu)) != {80} for hdu in cards):
            raise ValueError("a card is not 80 characters long")
        data = encode_file_from_cards(cards)
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{str(image)[:80]}: not a header (cards that are not 80-character ASCII images: {exc})") from None
    return data, hashlib.md5(data).hexdigest()


def header_files(payload: dict[str, Any], formats: tuple[str, ...]) -> list[tuple[str, bytes, str]]:
    """(format, bytes, MD5) of each file of one header payload, in the order of ``formats``."""
    fits, md5 = header_file(payload)
    out = []
    for fmt in formats:
        if fmt == "fits":
            out.append((fmt, fits, md5))
        else:
            data = payload_yaml(payload["hdus"])
            out.append((fmt, data, hashlib.md5(data).hexdigest()))
    return out


def annex_relpath(instrument: str, dayobs: object, image: object) -> str:
    """``<instrument>/<DAYOBS>/<imageName>.fits``, every component checked (:class:`SetAside` if bad)."""
    try:
        return LocalAnnex(Path("."), instrument).location(dayobs, image, 1, "fits")
    except BadName as exc:
        raise SetAside(str(exc)) from None


def aside_name(image: object, version: object) -> str:
    """File name of a set-aside header: its imageName when that is safe, else a digest of it."""
    name = str(image) if image_name_problem(image) is None else "invalid-" + hashlib.sha256(repr(image).encode()).hexdigest()[:16]
    v = str(version) if isinstance(version, int) and not isinstance(version, bool) else "x"
    return f"{name}.v{v}.json"


class AnnexIndex:
    """imageName -> latest entry (path, version, md5, url, announced); an append-only JSON-lines file."""

    def __init__(self, path: Path):
        self.path = path
        self.log = AppendLog(path)
        self.lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        for e in self.log.load():
            if "imageName" in e:
                self.entries[e["imageName"]] = e
            else:
                log.warning("index line without imageName skipped: %.80s", e)

    def add(self, entry: dict[str, Any], sync: bool = True) -> None:
        """Append one entry; ``sync=False`` leaves the fsync to the next synced entry (the
        composer keeps an unacknowledged header until the synced one exists, and sends it again).
        The loop and the durability thread both append: one line at a time, and the fsync outside
        the lock, so an append never waits for the other thread's disk."""
        with self.lock:
            self.log.append(entry, sync=False)
            self.entries[entry["imageName"]] = entry
        if sync:
            self.log.sync()


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
            cfg.csc, "largeFileObjectAvailable", 0, generator=cfg.csc, mimeType=MIME_TYPE["fits"], private_identity=cfg.csc
        )

    def announce(self, url: str, version: int, size: int, md5: str, image: str, mime: str = MIME_TYPE["fits"]) -> None:
        """One largeFileObjectAvailable; the sample is built once and refilled (it is on the
        announcement's critical path)."""
        self.seq += 1
        s = self.sample
        s.url, s.version, s.byteSize, s.checkSum, s.id, s.mimeType = url, float(version), size, md5, image, mime
        s.private_sndStamp, s.private_seqNum = tai_now(), self.seq
        self.writer.write(s)


class KafkaAnnouncer:
    """Writes largeFileObjectAvailable for the instance's CSC on Kafka (``bus: kafka``).

    A bus that is not up makes :meth:`announce` raise ConnectionError: the header is kept and
    retried as for an unwritable annex, never lost."""

    def __init__(self, cfg: InstanceConfig):
        from protocols.bus import open_bus

        self.csc = cfg.csc
        self.bus = open_bus(cfg)
        self.writer = self.bus.writer(cfg.csc, "largeFileObjectAvailable", identity=cfg.csc)
        self._queued: set[tuple[str, int, str]] = set()  # (url, version, md5) written, not yet acknowledged
        self._failed_seen = 0
        try:
            self._connect(10.0)
        except ConnectionError:
            pass  # said in the log; tried again at the first announcement

    def _connect(self, wait: float) -> None:
        from protocols.bus import BusUnavailable

        if getattr(self.bus, "started", True):
            return
        try:
            self.bus.start(registry_wait_s=wait)
            log.info("announcing on Kafka (%s)", self.bus.settings.broker_addr)
        except BusUnavailable as exc:
            log.error("largeFileObjectAvailable cannot be written yet: %s", exc)
            raise ConnectionError(str(exc)) from None

    def announce(self, url: str, version: int, size: int, md5: str, image: str, mime: str = MIME_TYPE["fits"]) -> None:
        self._connect(1.0)
        key = (url, version, md5)
        if key not in self._queued:
            # an announcement the broker did not acknowledge stays in the producer's queue and is
            # delivered once the broker is back: its retry waits for it instead of writing it twice
            self.writer.write(
                {"generator": self.csc, "mimeType": mime, "url": url, "version": float(version), "byteSize": size, "checkSum": md5, "id": image}
            )
            self._queued.add(key)
        if self.bus.flush_pending(5.0):  # on the broker before the composer is told it is announced
            raise ConnectionError("largeFileObjectAvailable not acknowledged by the Kafka broker in 5 s")
        self._queued.discard(key)
        failed = self._failed()
        if failed != self._failed_seen:  # the producer gave up on records (message.timeout.ms): write them again
            self._failed_seen = failed
            self._queued.clear()
            self.announce(url, version, size, md5, image, mime)

    def _failed(self) -> int:
        """Records the producer gave up on, so far."""
        return int(self.bus.writer_of(self.csc, self.writer.topic).failed)


class AnnexHandler(SimpleHTTPRequestHandler):
    """The annex's files, plus ``GET /index/<imageName>``: the latest index entry as JSON.

    Requests are hostile until checked: a connection silent for :data:`HTTP_TIMEOUT_S` is closed
    (``timeout``), and a path the file system cannot take (NUL byte, undecodable) gets 400."""

    index: "AnnexIndex | None" = None
    timeout = HTTP_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path.startswith("/index/") and self.index is not None:
            name = urllib.parse.unquote(self.path[len("/index/") :].strip("/"))
            entry = self.index.entries.get(name)
            body = json.dumps(entry if entry else {"error": f"{name[:80]} is not in the annex index"}).encode()
            self.send_response(200 if entry else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def send_head(self):  # noqa: ANN201 (stdlib signature)
        """The stdlib's, refusing paths it would choke on (``os.stat`` raises on a NUL byte)."""
        try:
            if "\x00" in urllib.parse.unquote(urllib.parse.urlsplit(self.path).path, errors="strict"):
                raise ValueError("NUL byte in the path")
            return super().send_head()
        except (ValueError, UnicodeError) as exc:
            self.send_error(HTTPStatus.BAD_REQUEST, f"bad path: {exc}")
            return None

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, socket.timeout):
            self.close_connection = True  # the client went away or fell silent mid-response

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http: " + format, *args)


class AnnexHTTPServer(ThreadingHTTPServer):
    """One thread per connection (daemon, never waited for), a deep listen backlog."""

    request_queue_size = HTTP_BACKLOG
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("http: request from %s failed", client_address, exc_info=True)


def serve_annex(root: Path, port: int, index: "AnnexIndex | None" = None, timeout: float = HTTP_TIMEOUT_S) -> AnnexHTTPServer:
    root.mkdir(parents=True, exist_ok=True)
    handler_cls = type("InstanceAnnexHandler", (AnnexHandler,), {"index": index, "timeout": timeout})
    handler = functools.partial(handler_cls, directory=str(root))
    server = AnnexHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="annex-http", daemon=True).start()
    return server


class Publisher:
    def __init__(self, cfg: InstanceConfig):
        self.cfg = cfg
        self.root = Path(cfg.annex_folder)  # the annex folder, or the S3 annex's local index and set-asides
        self.index = AnnexIndex(index_path(cfg))
        self.aside_dir = self.root / cfg.instrument / "rejected"
        self.counts = Counters()
        ctx = zmq.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(cfg.endpoints.publisher_pull)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(cfg.endpoints.publisher_pub)
        self.sender = Sender(sender_id("publisher", cfg.instrument))
        self.http = serve_annex(self.root, cfg.endpoints.http_port, self.index)
        self.base_url = f"http://127.0.0.1:{cfg.endpoints.http_port}"
        self.annex = open_annex(cfg, self.base_url)
        self.announcer: Announcer | KafkaAnnouncer = KafkaAnnouncer(cfg) if cfg.bus == "kafka" else Announcer(cfg)
        self.pending: list[dict[str, Any]] = []  # headers whose write failed: retried, never dropped
        self.unwritable: str | None = None  # why the annex cannot be written, while it lasts
        self.setup_error: str | None = None  # why the annex cannot be used as configured (S3 credentials...)
        self.spool_dir = Path(cfg.state_dir) / cfg.instrument / "publisher-spool"
        self.spooled: set[str] = set()  # spool files of the kept headers
        self.durable: BackgroundWorker[AnnouncedHeader] | None = None  # the durability thread, while run() runs
        self.in_flight: set[str] = set()  # imageNames announced and not yet durable
        self.load_spool()
        self.check_annex()

    # -- headers kept while the annex cannot take them -----------------------------------------
    def load_spool(self) -> None:
        """Headers kept by an earlier run of this process: retried at once (from the first cycle)."""
        for path in sorted(self.spool_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                payload = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("spooled header %s unreadable (%s): left in place", path, exc)
                continue
            if isinstance(payload, dict):
                self.pending.append(payload)
                self.spooled.add(path.name)
        if self.pending:
            log.warning("%d header(s) kept by the previous run: retried now", len(self.pending))
            self.unwritable = f"annex {self.annex_name()}: headers kept by the previous run"

    def keep(self, payload: dict[str, Any]) -> None:
        """Keep a header for the next retry cycle, in memory and in the spool (state folder), so that
        neither a restart of this process nor a long outage depends on the composer's resending."""
        self.pending.append(payload)
        name = aside_name(payload.get("imageName"), payload.get("version"))
        if name in self.spooled:
            return
        try:
            write_atomic(self.spool_dir / name, json.dumps(payload).encode())
            self.spooled.add(name)
        except OSError as exc:
            log.error("%s kept in memory only (spool %s: %s); the composer keeps it too", payload.get("imageName"), self.spool_dir, exc)

    def unspool(self, payload: dict[str, Any]) -> None:
        name = aside_name(payload.get("imageName"), payload.get("version"))
        if name in self.spooled:
            try:
                (self.spool_dir / name).unlink(missing_ok=True)
                self.spooled.discard(name)
            except OSError as exc:
                log.warning("spooled %s not removed (%s): it will be acknowledged again, not announced twice", name, exc)

    def check_annex(self) -> None:
        """An S3 annex: credentials and bucket usable (a missing bucket is created). While they are not,
        the CSC is put in FAULT (resent every retry cycle): headers are kept, not written."""
        check = getattr(self.annex, "check", None)
        if check is None:
            return
        from procs.annex_s3 import S3SetupError

        try:
            check()
        except S3SetupError as exc:
            if self.setup_error != str(exc):
                log.error("annex unusable: %s", exc)
            self.setup_error = str(exc)
            self.pub.send_multipart(fault_frames(self.sender, self.cfg.instrument, ErrorCode.ANNEX_UNWRITABLE, f"annex unusable: {exc}"))
            return
        except OSError as exc:
            log.warning("annex not reachable yet: %s", exc)
        if self.setup_error:
            log.info("annex usable again: %s", self.annex_name())
        self.setup_error = None

    def annex_name(self) -> str:
        return f"s3://{self.cfg.annex_bucket}" if self.cfg.annex_bucket else str(self.root)

    def store(self, loc: str, data: bytes, md5: str, fmt: str, image: str) -> str:
        """Put one file; other bytes already at its place are never replaced: the file goes to a
        place of its own (its MD5 in the name), and operators are told."""
        try:
            self.annex.put(loc, data, md5, fmt)
            return loc
        except AnnexConflict as exc:
            alt = conflict_location(loc, md5)
            self.counts["conflicts"] += 1
            log.warning("%s: %s; stored as %s instead", image, exc, alt)
            self.pub.send_multipart(
                warning_frames(self.sender, self.cfg.instrument, ErrorCode.HEADER_SET_ASIDE, f"{image}: {exc}: stored as {alt}")
            )
            self.annex.put(alt, data, md5, fmt)
            return alt

    def publish(self, payload: dict[str, Any]) -> AnnouncedHeader | None:
        """Store, index and announce one header version, exactly once per imageName and version;
        the header announced, to be made durable (:meth:`make_durable`) and acknowledged
        (:meth:`acknowledge`), or None for a version announced before (acknowledged again here).

        The index records the files before the announcements and again once durable, so a
        publisher killed in between announces on restart what it had not, and nothing twice.
        Raises :class:`SetAside` for a header that can never be written, OSError for one that
        cannot be written now.
        """
        image = payload["imageName"]
        version = int(payload["version"])
        t0 = time.perf_counter()
        files = header_files(payload, self.cfg.lfo_formats)
        try:
            check_image_name(image)
            locs = [self.annex.location(payload.get("dayobs"), image, version, fmt) for fmt, _, _ in files]
        except BadName as exc:
            raise SetAside(str(exc)) from None
        prev = self.index.entries.get(image)
        if prev and int(prev["version"]) > version or (prev and int(prev["version"]) == version and prev.get("announced")):
            self.counts["duplicates"] += 1
            log.info("%s v%d already published (v%s): acknowledged, not announced again", image, version, prev["version"])
            self.pub.send_multipart(self.sender.frames(f"ctl.announced.{image}", prev))
            return None
        try:
            locs = [self.store(loc, data, md5, fmt, image) for loc, (fmt, data, md5) in zip(locs, files)]
        except BadName as exc:
            raise SetAside(str(exc)) from None
        stored = {
            fmt: {"path": loc, "url": self.annex.url(loc), "md5": md5, "byteSize": len(data), "mimeType": MIME_TYPE[fmt]}
            for loc, (fmt, data, md5) in zip(locs, files)
        }
        main = stored[files[0][0]]
        entry = Announced(image, version, main["path"], main["url"], main["md5"], main["byteSize"],
                          bool(payload.get("complete", True)), None, self.annex.kind, stored)  # fmt: skip
        self.index.add(entry.encode(), sync=False)
        t1 = time.perf_counter()
        for f in stored.values():
            self.announcer.announce(f["url"], version, f["byteSize"], f["md5"], image, f["mimeType"])
        entry.announced = tai_now()
        return AnnouncedHeader(payload, entry, locs, (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000)

    def make_durable(self, header: AnnouncedHeader) -> None:
        """fsync of the files and their folder, the provenance side-car, the index entry saying it is
        announced: on disk before the acknowledgement. Until then the composer keeps the header and
        sends it again after a crash of this machine, and it is written and announced again. Runs on
        the durability thread (:class:`procs.background.BackgroundWorker`), off the loop that takes
        the next header; raises OSError if the disk refuses."""
        for loc in header.locs:
            self.annex.commit(loc)
        try:
            self.annex.put_side(header.locs[0], json.dumps(header.payload.get("provenance", {}), indent=1).encode())
        except OSError as exc:
            header.side_car_error = str(exc)
        self.index.add(header.entry.encode())

    def acknowledge(self, header: AnnouncedHeader) -> None:
        """Tell the composer (which stops keeping it) that a header is announced and durable."""
        entry = header.entry
        if header.side_car_error:
            self.counts["side_car_errors"] += 1
            log.error("%s v%d: provenance side-car not stored: %s", entry.imageName, entry.version, header.side_car_error)
        self.pub.send_multipart(self.sender.frames(f"ctl.announced.{entry.imageName}", entry.encode()))
        self.counts["announced"] += 1
        log.info(
            "%s v%d written (%s) and announced at %s; %.1f ms to write, %.1f ms to announce",
            entry.imageName, entry.version, ", ".join(f"{f['byteSize']} bytes md5 {f['md5']}" for f in entry.files.values()),
            " and ".join(f["url"] for f in entry.files.values()), header.write_ms, header.announce_ms,
        )  # fmt: skip

    def set_aside(self, payload: dict[str, Any], reason: str) -> None:
        """Keep a header that can never be written in ``<instrument>/rejected/`` with its reason,
        tell the composer (which stops resending it) and the operators. Raises OSError if even
        that cannot be written now (the header is then kept and retried like any other)."""
        image, version = payload.get("imageName"), payload.get("version")
        name = aside_name(image, version)
        path = self.aside_dir / name
        if not path.exists():
            record = {"imageName": image, "version": version, "reason": reason, "setAside": tai_now(), "payload": payload}
            write_atomic(path, json.dumps(record).encode())
        rel = f"{self.cfg.instrument}/rejected/{name}"
        self.counts["set_aside"] += 1
        log.error("%s v%s set aside in %s: %s", str(image)[:80], version, rel, reason)
        topic_name = image if image_name_problem(image) is None else "invalid"
        self.pub.send_multipart(
            self.sender.frames(f"ctl.rejected.{topic_name}", Rejected(image, version, reason, rel).encode())
        )
        self.pub.send_multipart(
            warning_frames(self.sender, self.cfg.instrument, ErrorCode.HEADER_SET_ASIDE, f"header {str(image)[:80]} v{version} set aside in {rel}: {reason}")
        )

    def attempt(self, payload: dict[str, Any], retry: bool = False) -> bool:
        """Publish one header, or set it aside; False (and kept for a retry) if the annex cannot be
        written now. A header announced from the loop is made durable on the durability thread and
        acknowledged once that is done (:meth:`collect_durable`); a retried one (or any, outside
        :meth:`run`) before this returns."""
        if self.unwritable and self.annex.kind != "local" and not retry:
            # a remote annex that is down or slow costs a timeout per try: wait for the next cycle
            self.keep(payload)
            log.warning("%s kept for the next retry (annex unavailable)", payload.get("imageName"))
            return False
        try:
            try:
                header = self.publish(payload)
            except SetAside as exc:
                self.set_aside(payload, str(exc))
                header = None
            if header is not None and not retry and self.durable is not None:
                self.in_flight.add(header.entry.imageName)
                self.durable.submit(header)
                return True
            if header is not None:
                self.make_durable(header)
                self.acknowledge(header)
        except OSError as exc:
            self.not_written(payload, exc, retry)
            return False
        self.unspool(payload)
        return True

    def collect_durable(self, finished: list[tuple[AnnouncedHeader, Exception | None]]) -> None:
        """Acknowledge the headers the durability thread made durable; keep for a retry those it could not."""
        for header, error in finished:
            self.in_flight.discard(header.entry.imageName)
            if error is None:
                self.acknowledge(header)
                self.unspool(header.payload)
            else:
                if not isinstance(error, OSError):
                    log.error("%s: making it durable failed", header.entry.imageName, exc_info=error)
                self.not_written(header.payload, error, retry=False)
        if finished:
            self.report_writable()

    def not_written(self, payload: dict[str, Any], exc: Exception, retry: bool) -> None:
        """A header the annex could not take now: kept for the next retry cycle, the operators told."""
        self.counts["write_errors"] += 1
        self.keep(payload)
        if retry:
            log.error("still cannot write %s: %s", payload.get("imageName"), exc)
        else:
            log.error("cannot write %s (kept, retried every %.0f s): %s", payload.get("imageName"), RETRY_S, exc)
        self.report_unwritable(exc)

    def report_unwritable(self, exc: Exception) -> None:
        """The operators learn through the CSC that headers are being kept (repeated every cycle)."""
        why = getattr(exc, "strerror", None) or str(exc)
        self.unwritable = f"annex {self.annex_name()} unwritable ({why}): headers are kept and retried every {RETRY_S:.0f} s"
        self.pub.send_multipart(warning_frames(self.sender, self.cfg.instrument, ErrorCode.ANNEX_UNWRITABLE, self.unwritable))

    def report_writable(self) -> None:
        if self.unwritable and not self.pending:
            log.info("annex %s writable again: every kept header is written and announced", self.annex_name())
            self.pub.send_multipart(
                warning_frames(self.sender, self.cfg.instrument, ErrorCode.ANNEX_UNWRITABLE,
                               f"annex {self.annex_name()} writable again: kept headers written and announced", active=False)
            )  # fmt: skip
            self.unwritable = None

    def run(self, stop: Stop) -> None:
        log.info("publisher up: annex %s, HTTP %s", self.root, self.base_url)
        last_retry = last_status = time.monotonic()
        pacer = GcPacer()
        durable = self.durable = BackgroundWorker(self.make_durable, "publisher-durability")
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(durable.signal, zmq.POLLIN)
        while not stop.requested:
            if time.monotonic() - last_retry > RETRY_S:
                last_retry = time.monotonic()
                if self.setup_error:
                    self.check_annex()
                if self.pending:
                    self.retry_pending()
            if time.monotonic() - last_status > 1.0:
                last_status = time.monotonic()
                self.pub.send_multipart(
                    self.sender.frames(
                        f"ctl.status.publisher.{self.cfg.instrument}",
                        ProcessStatus(self.counts.as_dict(), pending=len(self.pending), unsynced=durable.busy).encode(),
                    )
                )
            ready = dict(poller.poll(200))
            if durable.signal in ready:
                self.collect_durable(durable.finished())
            if self.pull not in ready:
                pacer.step(quiet=True)
                continue
            pacer.step(quiet=False)
            frames = self.pull.recv_multipart()
            try:
                msg = decode(frames)
                if not isinstance(msg.payload, dict):
                    raise ValueError("header payload is not an object")
                key = (msg.payload.get("imageName"), msg.payload.get("version"))
                if any((p.get("imageName"), p.get("version")) == key for p in self.pending):
                    continue  # already kept for the next retry cycle
                if msg.payload.get("imageName") in self.in_flight:
                    self.collect_durable(durable.wait())  # that image's earlier version indexed first
                if self.attempt(msg.payload):
                    self.report_writable()
            except (EnvelopeError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                self.counts["bad_messages"] += 1
                log.error("header message rejected: %s", exc)
        self.durable = None
        self.collect_durable(durable.close())
        self.http.shutdown()

    def retry_pending(self) -> None:
        """Each kept header once per cycle, in the order they came."""
        if self.durable is not None:
            self.collect_durable(self.durable.wait())  # a header whose durability failed is among them
        retry, self.pending = self.pending, []
        for i, payload in enumerate(retry):
            if not self.attempt(payload, retry=True) and self.annex.kind != "local":
                self.pending.extend(retry[i + 1 :])  # a remote annex still down: the rest waits too
                return
        self.report_writable()


def main(argv: list[str] | None = None) -> None:
    run_process("hs-publisher", __doc__, lambda cfg: Publisher(cfg).run, argv)


if __name__ == "__main__":
    main()
