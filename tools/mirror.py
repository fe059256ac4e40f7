"""hs-mirror: copy the summit LFO annex of one instance to a base annex, and catch up after outages.

Examples::

    hs-mirror --instance LATISS --to /data/base-annex                      # follow the bus + the summit index
    hs-mirror --instance LATISS --to /data/base-annex --summit-url http://127.0.0.1:5559 --domain 42
    hs-mirror --instance LATISS --to /data/base-annex --once               # sync from the index, then exit

The base-side copier of the summit → base flow. It follows the instance's
``<CSC>_logevent_largeFileObjectAvailable`` on the instance's bus: on DDS (transient-local: a late
joiner also gets the recent announcements) or, with ``bus: kafka`` (``HS_BUS=kafka``), on Kafka
with ts_salobj's variables (a consumer group of its own, from the topic's first record: the log
keeps every announcement), and reads the summit index ``<summit-url>/<instrument>/index.jsonl`` at start,
every ``--resync`` seconds and after any failed download, so that whatever was published while the
summit–base link was down (hs-mirror stopped, summit HTTP unreachable, DDS samples missed) is
copied once the link is back.

Every (imageName, version) the base annex does not hold with the same MD5 is downloaded, its MD5
and size checked against the announcement (a mismatch is logged, rejected and retried later),
written atomically to ``<BASE>/<same relative path>`` with its ``.prov.json`` side-car (best effort)
and appended to the base annex's own ``<BASE>/<instrument>/index.jsonl``, so the base copy is
self-describing. A newer version replaces an older one; an older one never replaces a newer one.
The base index is read (and its files' sizes checked) at start, so restarts copy nothing twice;
``--once`` also checks the MD5 of every base file against the summit index.
Failed downloads are retried with exponential backoff (1 s doubling to ``--max-backoff``).

exit status: 0 done (``--once``: everything in the summit index is copied and verified; otherwise
stopped by SIGTERM/SIGINT), 1 ``--once`` with something not copied, 2 bad arguments.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from procs.common import Counters, Stop, base_parser, setup
from procs.journal import write_atomic
from procs.publisher import AnnexIndex
from protocols.envelope import tai_now
from tools.get import index_relpath, join_url, latest_entries, parse_index, primary_cards, version_of

log = logging.getLogger("mirror")

MIN_INDEX_INTERVAL = 2.0  # s: the summit index is never read more often than this
REPORT_EVERY = 60.0  # s: progress line even when nothing changes


class CopyError(Exception):
    """One download attempt failed (unreachable, HTTP error, MD5 or size mismatch, write error)."""


@dataclass
class Candidate:
    """One (imageName, version) the summit has published, as announced on DDS or listed in its index."""

    image: str
    version: float
    md5: str
    url: str
    path: str
    byte_size: int | None = None
    complete: bool | None = None
    announced: float | None = None
    source: str = "index"
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""

    @property
    def version_out(self) -> int | float:
        return int(self.version) if float(self.version).is_integer() else self.version


def backoff(attempts: int, cap: float) -> float:
    """Delay before retry number ``attempts`` (1, 2, 4, ... seconds, capped)."""
    return min(cap, 2.0 ** max(attempts - 1, 0))


def safe_relpath(rel: str, instrument: str) -> str:
    """A relative path inside ``<instrument>/`` (no absolute path, no ``..``), or ValueError."""
    p = PurePosixPath(rel.lstrip("/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] != instrument or p.suffix not in (".fits", ".yaml"):
        raise ValueError(f"path {rel!r} is not a .fits or .yaml file under {instrument}/")
    return str(p)


def candidate_from_entry(e: dict[str, Any], instrument: str, summit_url: str) -> Candidate:
    """A summit index entry → Candidate (the path is the index's; the url falls back to summit-url + path)."""
    rel = str(e.get("path") or urllib.parse.urlparse(str(e.get("url", ""))).path)
    rel = safe_relpath(rel, instrument)
    size = e.get("byteSize")
    return Candidate(
        image=str(e["imageName"]),
        version=version_of(e),
        md5=str(e.get("md5", "")).lower(),
        url=str(e.get("url") or join_url(summit_url, rel)),
        path=rel,
        byte_size=size if isinstance(size, int) else None,
        complete=e.get("complete") if isinstance(e.get("complete"), bool) else None,
        announced=e.get("announced") if isinstance(e.get("announced"), (int, float)) else None,
        source="index",
    )


def candidate_from_sample(s: Any, instrument: str, source: str = "dds") -> Candidate:
    """A largeFileObjectAvailable sample (DDS, or a Kafka bus Sample) → Candidate (the relative path is the url's path)."""
    rel = safe_relpath(urllib.parse.urlparse(str(s.url)).path, instrument)
    image = str(s.id) or PurePosixPath(rel).stem
    return Candidate(
        image=image,
        version=float(s.version),
        md5=str(s.checkSum).lower(),
        url=str(s.url),
        path=rel,
        byte_size=int(s.byteSize) if int(s.byteSize) > 0 else None,
        announced=float(getattr(s, "private_sndStamp", 0.0)) or None,
        source=source,
    )


class Mirror:
    """State of the base copy: what it holds (verified), what is pending, and the copying itself."""

    def __init__(
        self,
        instrument: str,
        base_root: Path,
        summit_url: str,
        http_timeout: float = 10.0,
        max_backoff: float = 60.0,
    ):
        self.instrument = instrument
        self.root = Path(base_root)
        self.summit_url = summit_url.rstrip("/")
        self.index_url = join_url(self.summit_url, index_relpath(instrument))
        self.http_timeout = http_timeout
        self.max_backoff = max_backoff
        self.index = AnnexIndex(self.root / index_relpath(instrument))
        self.have: dict[str, tuple[float, str]] = {}  # imageName -> (version, md5) held and verified
        self.pending: dict[str, Candidate] = {}
        self.summit_latest: dict[str, dict[str, Any]] = {}  # last summit index read
        self.counts = Counters()
        self._verify_base()

    # ---- state ---------------------------------------------------------------------------
    def _verify_base(self) -> None:
        """Trust the base index only for files that are there with the indexed size (a stat, cheap
        for a large annex; ``--once`` checks every MD5)."""
        bad = 0
        for image, e in self.index.entries.items():
            path = self.root / str(e.get("path", ""))
            try:
                ok = path.is_file() and path.stat().st_size == int(e.get("byteSize", -1))
            except (OSError, TypeError, ValueError):
                ok = False
            if ok:
                self.have[image] = (version_of(e), str(e["md5"]).lower())
            else:
                bad += 1
                log.warning("base index lists %s v%s but %s is missing or differs: it will be copied again",
                            image, e.get("version"), path)
        log.info("base annex %s: %d headers held%s", self.root, len(self.have),
                 f", {bad} to copy again" if bad else "")

    def is_done(self, c: Candidate) -> bool:
        held = self.have.get(c.image)
        if held is None:
            return False
        return held[0] > c.version or (held[0] == c.version and held[1] == c.md5)

    def offer(self, c: Candidate) -> bool:
        """Queue a candidate unless held already or superseded by a newer pending version; True if queued."""
        if self.is_done(c):
            prev = self.pending.get(c.image)
            if prev is not None and self.is_done(prev):
                del self.pending[c.image]
            return False
        prev = self.pending.get(c.image)
        if prev is not None:
            if prev.version > c.version:
                return False
            if prev.version == c.version and prev.md5 == c.md5:
                # same thing again: keep the retry state, learn what the index adds
                if prev.complete is None:
                    prev.complete = c.complete
                if prev.byte_size is None:
                    prev.byte_size = c.byte_size
                return False
            if prev.version == c.version:  # same version, other MD5: keep counting attempts, try it now
                log.warning("%s v%s: MD5 %s replaces %s (%s)", c.image, c.version_out, c.md5, prev.md5, c.source)
                c.attempts = prev.attempts
            # a newer version starts afresh (an older one may have failed because it was replaced)
        self.pending[c.image] = c
        return True

    # ---- summit index -------------------------------------------------------------------
    def read_summit_index(self) -> int:
        """Read the summit index and queue what the base lacks; returns how many were queued. Raises CopyError."""
        try:
            with urllib.request.urlopen(self.index_url, timeout=self.http_timeout) as resp:  # noqa: S310
                text = resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # nothing published yet
                text = ""
            else:
                raise CopyError(f"summit index {self.index_url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CopyError(f"summit index {self.index_url}: {getattr(exc, 'reason', exc)}") from None
        self.counts["index_reads"] += 1
        self.summit_latest = latest_entries(parse_index(text))
        queued = 0
        for e in self.summit_latest.values():
            try:
                c = candidate_from_entry(e, self.instrument, self.summit_url)
            except (ValueError, KeyError) as exc:
                self.counts["bad_entries"] += 1
                log.error("summit index entry of %s skipped: %s", e.get("imageName"), exc)
                continue
            queued += self.offer(c)
        return queued

    # ---- copying ------------------------------------------------------------------------
    def _download(self, c: Candidate) -> bytes:
        urls = [c.url]
        alt = join_url(self.summit_url, c.path)
        if alt != c.url:
            urls.append(alt)  # the announced host may not be reachable from here; the summit URL may be
        errors = []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=self.http_timeout) as resp:  # noqa: S310
                    return resp.read()
            except urllib.error.HTTPError as exc:
                errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
        raise CopyError("download failed: " + "; ".join(errors))

    def copy(self, c: Candidate) -> None:
        """Download, verify and store one candidate; raises CopyError (nothing written then)."""
        data = self._download(c)
        got = hashlib.md5(data).hexdigest()
        if c.md5 and got != c.md5:
            self.counts["md5_mismatch"] += 1
            raise CopyError(f"MD5 mismatch: announced {c.md5}, downloaded {got} ({len(data)} bytes) from {c.url}: rejected")
        if c.byte_size is not None and c.byte_size != len(data):
            self.counts["size_mismatch"] += 1
            raise CopyError(f"size mismatch: announced {c.byte_size} bytes, downloaded {len(data)}: rejected")
        complete = c.complete
        if complete is None:
            try:
                cards = primary_cards(data)
                stat = [x for x in cards if x.startswith("HDRSTAT ")]
                complete = bool(stat) and "'COMPLETE" in stat[0]
            except Exception:  # noqa: BLE001 - only a descriptive field
                complete = None
        path = self.root / c.path
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise CopyError(f"cannot write {path}: {exc}") from None
        self._copy_provenance(c, path)
        entry = {
            "imageName": c.image,
            "version": c.version_out,
            "path": c.path,
            "url": c.url,
            "md5": got,
            "byteSize": len(data),
            "complete": complete,
            "announced": c.announced,
            "copied": tai_now(),
            "source": c.source,
        }
        try:
            self.index.add(entry)
        except OSError as exc:
            raise CopyError(f"cannot append to {self.index.path}: {exc}") from None
        self.have[c.image] = (c.version, got)
        self.counts["copied"] += 1
        log.info("%s v%s copied (%d bytes, md5 %s, via %s) to %s", c.image, c.version_out, len(data), got, c.source, path)

    def _copy_provenance(self, c: Candidate, path: Path) -> None:
        prov_url = c.url[: -len(".fits")] + ".prov.json" if c.url.endswith(".fits") else None
        alt = join_url(self.summit_url, c.path[: -len(".fits")] + ".prov.json")
        err: object = "no URL"
        for url in [u for u in (prov_url, alt) if u]:
            try:
                with urllib.request.urlopen(url, timeout=self.http_timeout) as resp:  # noqa: S310
                    write_atomic(path.with_suffix(".prov.json"), resp.read())
                return
            except (urllib.error.URLError, OSError) as exc:
                err = getattr(exc, "reason", exc)
        self.counts["prov_missing"] += 1
        log.warning("%s: provenance side-car not copied (%s)", c.image, err)

    def process_due(self, now: float, stop: Stop | None = None, max_attempts: int | None = None) -> int:
        """Try every pending candidate whose retry time has come; returns the number of failures."""
        failures = 0
        due = [c for c in self.pending.values() if c.next_try <= now and (max_attempts is None or c.attempts < max_attempts)]
        due.sort(key=lambda c: (c.announced or 0.0, c.image))
        for c in due:
            if stop is not None and stop.requested:
                break
            if self.pending.get(c.image) is not c:
                continue
            try:
                self.copy(c)
                self.pending.pop(c.image, None)
            except CopyError as exc:
                failures += 1
                self.counts["failures"] += 1
                c.attempts += 1
                c.last_error = str(exc)
                delay = backoff(c.attempts, self.max_backoff)
                c.next_try = time.monotonic() + delay
                log.error("%s v%s: %s (attempt %d, retry in %.0f s)", c.image, c.version_out, exc, c.attempts, delay)
        return failures

    def progress(self) -> str:
        return (
            f"copied {self.counts['copied']}, pending {len(self.pending)}, failures {self.counts['failures']}, "
            f"held {len(self.have)}"
        )

    def recheck(self) -> int:
        """Check the MD5 of every held base file the summit index lists; queue bad ones again. Returns their number."""
        bad = 0
        for image, e in self.summit_latest.items():
            held = self.have.get(image)
            if held is None:
                continue
            path = self.root / str(self.index.entries.get(image, {}).get("path", ""))
            try:
                ok = hashlib.md5(path.read_bytes()).hexdigest() == held[1]
            except OSError:
                ok = False
            if not ok:
                bad += 1
                del self.have[image]
                log.warning("%s: base file %s is missing or differs from the base index: copying it again", image, path)
                try:
                    self.offer(candidate_from_entry(e, self.instrument, self.summit_url))
                except (ValueError, KeyError) as exc:
                    log.error("summit index entry of %s skipped: %s", image, exc)
        return bad

    def verify_against_summit(self) -> list[str]:
        """Problems of the base copy versus the last summit index read (empty when all is copied and verified)."""
        problems = []
        for image, e in sorted(self.summit_latest.items()):
            want_md5 = str(e.get("md5", "")).lower()
            held = self.have.get(image)
            if held is None or held[0] < version_of(e):
                problems.append(f"{image} v{e.get('version')} not copied")
                continue
            base_e = self.index.entries.get(image, {})
            path = self.root / str(base_e.get("path", ""))
            try:
                got = hashlib.md5(path.read_bytes()).hexdigest()
            except OSError as exc:
                problems.append(f"{image}: {path} unreadable: {exc.strerror}")
                continue
            if held[0] == version_of(e) and got != want_md5:
                problems.append(f"{image} v{e.get('version')}: base MD5 {got} != summit {want_md5}")
            elif got != held[1]:
                problems.append(f"{image}: {path} changed on disk (MD5 {got}, indexed {held[1]})")
        return problems


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------
def _sleep(stop: Stop, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not stop.requested and time.monotonic() < end:
        time.sleep(min(0.1, max(end - time.monotonic(), 0)))


def run_once(m: Mirror, stop: Stop, retries: int) -> int:
    """Sync from the summit index; 0 when everything in it is copied and verified, else 1."""
    for attempt in range(1, retries + 1):
        try:
            m.read_summit_index()
            break
        except CopyError as exc:
            log.error("%s (attempt %d of %d)", exc, attempt, retries)
            if attempt == retries or stop.requested:
                log.error("summit index unreachable: nothing synced; %s", m.progress())
                return 1
            _sleep(stop, backoff(attempt, m.max_backoff))
    m.recheck()
    log.info("summit index: %d images, %d to copy", len(m.summit_latest), len(m.pending))
    while m.pending and not stop.requested:
        live = [c for c in m.pending.values() if c.attempts < retries]
        if not live:
            break
        now = time.monotonic()
        if m.process_due(now, stop, max_attempts=retries):
            # a failed download may be a version replaced meanwhile: look at the index again
            try:
                m.read_summit_index()
            except CopyError as exc:
                log.error("%s", exc)
        live = [c for c in m.pending.values() if c.attempts < retries]
        if live:
            _sleep(stop, max(0.0, min(c.next_try for c in live) - time.monotonic()))
    problems = m.verify_against_summit()
    for c in m.pending.values():
        problems.append(f"{c.image} v{c.version_out} not copied: {c.last_error or 'not attempted'}")
    for p in dict.fromkeys(problems):
        log.error("%s", p)
    log.info("once: %s; %s", m.progress(), "complete and verified" if not problems else f"{len(problems)} problems")
    return 0 if not problems else 1


class _KafkaFollower:
    """The announcements on Kafka, connected when the bus is up (a bus down at start is retried)."""

    RETRY_S = 5.0

    def __init__(self, key: tuple[str, str]):
        self.key = key
        self.watcher: Any = None
        self.next_try = 0.0

    def poll(self) -> list[Any]:
        if self.watcher is None:
            if time.monotonic() < self.next_try:
                return []
            from protocols.bus import BusUnavailable
            from tools.lfo import KafkaBusWatcher

            try:
                self.watcher = KafkaBusWatcher([self.key])
                log.info("following %s_logevent_largeFileObjectAvailable on Kafka", self.key[0])
            except BusUnavailable as exc:
                self.next_try = time.monotonic() + self.RETRY_S
                log.warning("%s; retrying in %.0f s (the summit index is read meanwhile)", exc, self.RETRY_S)
                return []
        self.watcher.poll()
        arrivals, self.watcher.arrivals[self.key] = self.watcher.arrivals[self.key], []
        return arrivals

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()


def run_follow(m: Mirror, stop: Stop, csc: str, domain: int | None, resync: float, bus: str = "dds") -> int:
    """Follow the announcements (DDS ``domain``, or Kafka when ``bus`` is kafka; neither when
    ``domain`` is None) and the summit index until SIGTERM/SIGINT."""
    watcher = None
    follower = None
    key = (csc, "largeFileObjectAvailable")
    if domain is not None and bus == "kafka":
        follower = _KafkaFollower(key)
    elif domain is not None:
        from tools.lfo import BusWatcher

        watcher = BusWatcher(domain, [key])
        log.info("following %s_logevent_largeFileObjectAvailable on DDS domain %d", csc, domain)
    next_index = 0.0  # read at start
    last_index = -MIN_INDEX_INTERVAL
    index_failures = 0
    last_report = time.monotonic()
    reported = ""
    while not stop.requested:
        now = time.monotonic()
        arrivals: list[Any] = []
        if watcher is not None:
            watcher.poll()
            arrivals, watcher.arrivals[key] = watcher.arrivals[key], []
        elif follower is not None:
            arrivals = follower.poll()
        for a in arrivals:
            try:
                c = candidate_from_sample(a.sample, m.instrument, bus)
            except (ValueError, TypeError, AttributeError) as exc:
                m.counts["bad_announcements"] += 1
                log.error("announcement ignored: %s", exc)
                continue
            if m.offer(c):
                log.info("announced: %s v%s (%s)", c.image, c.version_out, c.url)
        if now >= next_index:
            last_index = now
            try:
                queued = m.read_summit_index()
                if index_failures:
                    log.info("summit index reachable again after %d failed reads", index_failures)
                index_failures = 0
                next_index = now + resync
                if queued:
                    log.info("summit index: %d headers to catch up", queued)
            except CopyError as exc:
                index_failures += 1
                delay = min(resync, backoff(index_failures, m.max_backoff))
                next_index = now + delay
                log.warning("%s (failed read %d, next in %.0f s)", exc, index_failures, delay)
        if m.process_due(time.monotonic(), stop) and index_failures == 0:
            # something could not be downloaded: see what the summit index says now (rate-limited)
            next_index = min(next_index, max(time.monotonic(), last_index + MIN_INDEX_INTERVAL))
        line = m.progress()
        if line != reported or time.monotonic() - last_report > REPORT_EVERY:
            log.info("%s", line)
            reported, last_report = line, time.monotonic()
        _sleep(stop, 0.1)
    if follower is not None:
        follower.close()
    log.info("stopping: %s", m.progress())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = base_parser("hs-mirror", __doc__.splitlines()[0])
    p.add_argument("--to", required=True, metavar="BASE_ANNEX", help="base annex root folder (or s3://BUCKET with --from-s3)")
    p.add_argument("--from-s3", metavar="S3URL", help="summit S3 annex, s3://BUCKET: copy its header objects (MD5-checked)")
    p.add_argument("--summit-url", metavar="URL", help="summit annex over HTTP (default http://127.0.0.1:<instance HTTP port>)")
    p.add_argument("--domain", type=int, metavar="ID", help="DDS domain id (default: the instance's, or $HS_DDS_DOMAIN)")
    p.add_argument("--resync", type=float, default=30.0, metavar="SEC", help="read the summit index every SEC s (default 30)")
    p.add_argument("--once", action="store_true", help="sync from the summit index and exit (0 complete, 1 not)")
    p.add_argument("--no-dds", "--no-bus", action="store_true",
                   help="do not follow the announcements on the bus, DDS or Kafka (summit index only)")  # fmt: skip
    p.add_argument("--retries", type=int, default=3, metavar="N", help="--once: attempts per file (default 3)")
    p.add_argument("--max-backoff", type=float, default=60.0, metavar="SEC", help="longest delay between retries (default 60)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SEC", help="HTTP timeout (default 10)")
    args = p.parse_args(argv)
    if args.resync <= 0 or args.retries < 1 or args.max_backoff < 1 or args.timeout <= 0:
        p.error("--resync and --timeout must be > 0, --retries >= 1, --max-backoff >= 1")
    if args.summit_url and not urllib.parse.urlparse(args.summit_url).scheme.startswith("http"):
        p.error(f"--summit-url {args.summit_url!r}: expected http://HOST:PORT")
    cfg = setup(args, "hs-mirror")
    if args.from_s3:
        from tools.mirror_s3 import BucketMirror, run as run_s3

        bucket = args.from_s3[len("s3://") :].strip("/") if args.from_s3.startswith("s3://") else ""
        if not bucket:
            p.error(f"--from-s3 {args.from_s3!r}: expected s3://BUCKET")
        log.info("hs-mirror %s: s3://%s -> %s%s", cfg.instrument, bucket, args.to, " (once)" if args.once else "")
        return run_s3(BucketMirror(cfg.csc, bucket, args.to), Stop(), args.once, args.resync)
    if args.to.startswith("s3://"):
        p.error("--to s3://BUCKET needs --from-s3")
    args.to = Path(args.to)
    summit_url = args.summit_url or f"http://127.0.0.1:{cfg.endpoints.http_port}"
    stop = Stop()
    try:
        m = Mirror(cfg.instrument, args.to, summit_url, http_timeout=args.timeout, max_backoff=args.max_backoff)
    except OSError as exc:
        log.error("base annex %s unusable: %s", args.to, exc)
        return 1
    log.info("hs-mirror %s: summit %s -> base %s%s", cfg.instrument, summit_url, args.to, " (once)" if args.once else "")
    if args.once:
        return run_once(m, stop, args.retries)
    domain = None if args.no_dds else (args.domain if args.domain is not None else cfg.dds_domain)
    return run_follow(m, stop, cfg.csc, domain, args.resync, cfg.bus)


if __name__ == "__main__":
    sys.exit(main())
