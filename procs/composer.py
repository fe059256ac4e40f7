"""hs-composer: follows the camera's events and composes each image's header.

SUBscribes to the listener's camera events. An exposure opens at startIntegration; at
endOfImageTelemetry (or when it is late beyond the deadline) the composer asks the cache for the
snapshots as of each collection point's own event time, composes the header (pure code in
:mod:`header.compose`), PUSHes it to the publisher and PUBlishes it on the fast path
(``hdr.<instrument>.<imageName>``). Overlapping exposures are independent entries.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from header import astro
from header.compose import CAMERA_EVENTS, ComposedHeader, ExposureInputs, Templates, compose_header, usable_duration
from procs.common import Counters, GcPacer, Stop, base_parser, drain, setup
from procs.journal import AppendLog, read_json, write_json_atomic
from protocols.config import InstanceConfig, KeywordMap, load_keyword_map, load_template
from protocols.envelope import EnvelopeError, GapTracker, Sender, decode, sender_id, split_identity, tai_now
from protocols.csc_state import CscStateFollower, ErrorCode, fault_frames
from protocols.messages import CacheClient, CacheUnavailable, topic_key
from protocols.names import IMAGE_NAME
from protocols.salrecord import FUTURE_SLACK

log = logging.getLogger("composer")
DONE_KEPT = 5000  # composed images remembered in the journal
ACK_TIMEOUT = 5.0  # s before an unacknowledged header is sent to the publisher again
RESYNC_MARGIN = 120.0  # s of bus time replayed from the cache after a restart or a gap
RESYNC_WINDOW = 3600.0  # s replayed when the journal has no bus time
RESYNC_HOLD = 30.0  # s without deadlines while a resync from the cache is pending
END_GRACE = 1.0  # s to wait for an exposure's other events when its end arrives first
CACHE_TRIES = 4  # cache requests (5 s each) before a header is written without telemetry
FILL_WINDOW = 4 * 3600.0  # s of cache history searched for an image's missing events
PRECOMPOSE_AT = ("startReadout", "imageReadoutParameters")  # the readout geometry comes with the latter
RECENT_HEADERS = 20  # headers kept in memory to answer per-sensor requests
PAST_SLACK = 366 * 86400.0  # s behind its reception beyond which an event's stamp is not believed
DEFAULT_TIMEOUT_EXTRA = 30.0  # s after the exposure time when startIntegration gives no usable timeout
CSC_WAIT = 5.0  # s a starting composer waits for the CSC's state (it may be restarting too) before replaying


@dataclass
class OpenExposure:
    image_name: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_seq: tuple[str, int] = ("", 0)
    deadline_tai: float | None = None
    deadline_wall: float | None = None
    grace_wall: float | None = None  # end seen before start: finish when this passes
    # snapshots at the start and readout points read by the provisional composition (not journaled)
    early: dict[str, dict[str, Any]] = field(default_factory=dict)
    early_points: dict[str, float] = field(default_factory=dict)


#: Fields read besides each keyword's own: sensor order and makers, keyed-array keys, time series origin.
AUX_FIELDS = ("ccdLocation", "ccdManufacturer", "location", "additionalKeys", "cRioTimestamp")


def needed_fields(kmap: KeywordMap) -> dict[str, list[str]]:
    """Per topic key, the fields a header reads: the cache answers with those alone."""
    out: dict[str, set[str]] = {}
    for src in kmap.keywords:
        out.setdefault(src.topic_key, set(AUX_FIELDS)).add(src.field)
    return {k: sorted(v) for k, v in out.items()}


def collection_request(cfg: InstanceConfig, kmap: KeywordMap, points: dict[str, float]) -> dict[str, Any]:
    """The cache request for one header: topic keys per collection point, monitor windows, and the
    fields each topic is read for."""
    topics, monitored, fields = _request_plan(cfg.camera, kmap, tuple(sorted(points)))
    windows = []
    if "start" in points:
        windows = [{"key": k, "t0": points["start"], "t1": points.get("end", points["start"])} for k in monitored]
    return {"op": "collect", "points": points, "topics": dict(topics), "windows": windows, "fields": fields}


_Plan = tuple[dict[str, list[str]], list[str], dict[str, list[str]]]
_PLANS: dict[tuple[str, int, tuple[str, ...]], tuple[KeywordMap, _Plan]] = {}


def _request_plan(camera: str, kmap: KeywordMap, point_names: tuple[str, ...]) -> _Plan:
    """Topics per point, monitored topics and fields of a keyword map: the same for every header."""
    memo_key = (camera, id(kmap), point_names)
    got = _PLANS.get(memo_key)
    if got is not None and got[0] is kmap:
        return got[1]
    topics: dict[str, set[str]] = {p: set() for p in point_names}
    fp_key = topic_key(camera, "focalPlaneSummaryInfo")
    topics.setdefault("start", set()).add(fp_key)
    monitored = []
    for src in kmap.keywords:
        if src.component == camera and src.topic in CAMERA_EVENTS:
            continue
        point = src.when if src.when in point_names else "start"
        topics.setdefault(point, set()).add(src.topic_key)
        if src.monitor:
            monitored.append(src.topic_key)
    fields = dict(needed_fields(kmap))
    fields.setdefault(fp_key, list(AUX_FIELDS))
    plan = ({p: sorted(k) for p, k in topics.items()}, monitored, fields)
    _PLANS[memo_key] = (kmap, plan)
    return plan


def collection_points(ev: dict[str, dict[str, Any]]) -> dict[str, float]:
    """TAI time of each collection point, from the exposure's own events (event time)."""
    points: dict[str, float] = {}
    start = ev.get("startIntegration")
    if start:
        points["start"] = start["sndStamp"]
    ro = ev.get("startReadout")
    if ro:
        points["readout"] = ro["sndStamp"]
    elif start:
        data = start.get("data") if isinstance(start.get("data"), dict) else {}
        points["readout"] = start["sndStamp"] + (usable_duration(data.get("exposureTime")) or 0.0)
    end = ev.get("endOfImageTelemetry")
    if end:
        points["end"] = end["sndStamp"]
        points.setdefault("start", end["sndStamp"])
        points.setdefault("readout", end["sndStamp"])
    elif points:
        points["end"] = max(points.values())
    return points


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def bounded_event_time(sample: dict[str, Any], now_tai: float) -> tuple[float, str | None]:
    """The time a camera event counts at, and why it is not its own ``private_sndStamp``.

    An event stamped far from when it was received (``rcvStamp``, the listener's clock; the
    present when unknown) has a broken clock behind it: believed, a stamp of 2065 would move the
    deadline clock decades ahead and make every later exposure late at once. Such an event counts
    at its reception time instead, and its header says so."""
    snd, rcv = sample.get("sndStamp"), sample.get("rcvStamp")
    ref = float(rcv) if _finite(rcv) and rcv > 0 else now_tai
    if not _finite(snd):
        return ref, f"private_sndStamp {snd!r} is not a time: its reception time {ref:.3f} used"
    if snd > ref + FUTURE_SLACK:
        return ref, f"private_sndStamp {snd:.3f} is {snd - ref:.0f} s after its reception: reception time {ref:.3f} used"
    if snd < ref - PAST_SLACK:
        return ref, f"private_sndStamp {snd:.3f} is {ref - snd:.0f} s before its reception: reception time {ref:.3f} used"
    return float(snd), None


def exposure_timeout(data: dict[str, Any]) -> float:
    """Seconds startIntegration allows for the exposure: its timeout, else exposure time + 30 s
    (NaN, infinite, negative or absurd values are not believed)."""
    return usable_duration(data.get("timeout")) or (usable_duration(data.get("exposureTime")) or 0.0) + DEFAULT_TIMEOUT_EXTRA


class Composer:
    def __init__(self, cfg: InstanceConfig):
        self.cfg = cfg
        self.kmap = load_keyword_map(cfg)
        self.templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
        self.open: dict[str, OpenExposure] = {}
        self.done: dict[str, list[Any]] = {}  # imageName -> [version, complete] composed
        self.unacked: dict[str, tuple[float, int, bytes]] = {}  # imageName -> (sent, version, payload JSON)
        self.done_events: dict[str, dict[str, Any]] = {}  # recent images' events, for reissues
        self.csc = CscStateFollower(cfg, role="composer")
        self.skipped: dict[str, str] = {}  # imageName -> why no header was produced
        self.start_stamps: dict[str, float] = {}  # imageName -> its startIntegration's stamp (composed images)
        self.without_end: set[str] = set()  # images whose latest header was written without endOfImageTelemetry
        self.duplicates: set[tuple[str, float]] = set()  # second exposures under a used imageName, reported
        self.state_path = Path(cfg.state_dir) / cfg.instrument / "composer.json"
        self.history = AppendLog(Path(cfg.state_dir) / cfg.instrument / "composer-history.jsonl")
        self.bus_time = 0.0  # latest camera event time seen: the deadline clock of replayed nights
        self.counts = Counters()
        self.gaps = GapTracker()
        ctx = zmq.Context.instance()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, f"sal.{cfg.camera}.".encode())
        self.sub.connect(cfg.endpoints.listener_pub)
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, 10000)
        self.push.connect(cfg.endpoints.publisher_pull)
        self.acks = ctx.socket(zmq.SUB)
        self.acks.setsockopt(zmq.SUBSCRIBE, b"ctl.announced.")
        self.acks.setsockopt(zmq.SUBSCRIBE, b"ctl.rejected.")  # set aside by the publisher: kept there
        self.acks.connect(cfg.endpoints.publisher_pub)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(cfg.endpoints.composer_pub)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(cfg.endpoints.composer_router)
        self.recent: OrderedDict[str, Any] = OrderedDict()  # imageName -> SensorContext (per-sensor requests)
        self.precompose_due: dict[str, None] = {}  # exposures to compose provisionally, in order
        self.resync_since: float | None = None  # when a resync from the cache first failed
        self.sender = Sender(sender_id("composer", cfg.instrument))
        self.fast_sender = Sender(self.sender.sender)  # hdr.* only: forwarders see contiguous numbers
        self.ctl_sender = Sender(sender_id("composer-ctl", cfg.instrument))  # status, skipped, faults
        self.reply_sender = Sender(sender_id("composer-reply", cfg.instrument))  # ROUTER answers
        self.cache = CacheClient(cfg.endpoints.cache_router, Sender(self.sender.sender + "/req"), timeout_s=5.0)
        self.warm_up()
        self.csc.refresh(CSC_WAIT)  # answered at once when the CSC runs; replayed exposures need its state
        self.restore()

    # -- durable state ------------------------------------------------------------------------
    def save(self) -> None:
        """Journal open exposures and unacknowledged headers (atomic snapshot, small: composed and
        skipped images go to the append-only history log instead)."""
        write_json_atomic(
            self.state_path,
            {
                "open": {n: {"events": e.events, "deadline_tai": e.deadline_tai} for n, e in self.open.items()},
                "unacked": sorted(self.unacked),
                "bus_time": self.bus_time,
            },
        )

    def record(self, entry: dict[str, Any]) -> None:
        """One composed or skipped image into the history log; compacted when it doubles."""
        self.history.append(entry)
        if self.history.lines > 2 * DONE_KEPT:
            self.done = dict(list(self.done.items())[-DONE_KEPT:])
            self.skipped = dict(list(self.skipped.items())[-DONE_KEPT:])
            self.start_stamps = {n: t for n, t in self.start_stamps.items() if n in self.done}
            self.without_end &= set(self.done)
            self.duplicates = set(sorted(self.duplicates, key=lambda d: d[1])[-DONE_KEPT:])
            self.history.compact(
                [{"done": n, "v": v, "complete": c, **({"t": self.start_stamps[n]} if n in self.start_stamps else {}),
                  **({"noend": True} if n in self.without_end else {})} for n, (v, c) in self.done.items()]
                + [{"skipped": n, "reason": r} for n, r in self.skipped.items()]
                + [{"duplicate": n, "t": t, "reason": "imageName used again by another exposure"} for n, t in self.duplicates]
            )

    def restore(self) -> None:
        """Resume after a restart: reopen journaled exposures, recompose unacknowledged headers,
        and catch up with camera events published while this process was down (from the cache)."""
        state = read_json(self.state_path, {})
        self.done = {k: list(v) for k, v in state.get("done", {}).items()}  # journals of earlier releases
        bus_time = state.get("bus_time", 0.0)
        # a journal written before event times were bounded may hold a stamp from the future
        self.bus_time = min(float(bus_time), tai_now() + FUTURE_SLACK) if _finite(bus_time) else 0.0
        self.skipped = dict(state.get("skipped", {}))
        for rec in self.history.load():
            if "done" in rec:
                self.done.pop(rec["done"], None)
                self.done[rec["done"]] = [int(rec.get("v", 1)), bool(rec.get("complete", True))]
                if _finite(rec.get("t")):
                    self.start_stamps[rec["done"]] = float(rec["t"])
                (self.without_end.add if rec.get("noend") else self.without_end.discard)(rec["done"])
            elif "skipped" in rec:
                self.skipped[rec["skipped"]] = str(rec.get("reason", ""))
            elif "duplicate" in rec and _finite(rec.get("t")):
                self.duplicates.add((str(rec["duplicate"]), float(rec["t"])))
        redo = [n for n in state.get("unacked", []) if n in self.done]
        for name, rec in state.get("open", {}).items():
            if name in self.done:  # composed and logged, killed before the snapshot: send it again
                redo.append(name)
                self.done_events[name] = dict(rec.get("events", {}))
                continue
            exp = OpenExposure(name, dict(rec.get("events", {})))
            deadline = rec.get("deadline_tai")
            if deadline is not None:
                limit = max(self.bus_time, tai_now()) + exposure_timeout({}) + self.cfg.end_deadline
                exp.deadline_tai = float(deadline) if _finite(deadline) and deadline <= limit else limit
                exp.deadline_wall = time.monotonic() + max(0.0, exp.deadline_tai - self.bus_time)
            if "endOfImageTelemetry" in exp.events and "startIntegration" not in exp.events:
                exp.grace_wall = time.monotonic() + END_GRACE  # decided once the cache is asked again
            self.open[name] = exp
        if self.open or redo:
            log.info("resuming: %d open exposure(s), %d header(s) awaiting acknowledgement", len(self.open), len(redo))
        for name in redo:
            self.recompose(name, same_version=True)
        self.resync_from_cache()

    def resync_from_cache(self) -> None:
        """Replay camera events the cache holds since the journal's bus time (clone pattern).

        All of them or none: the events are fetched first and applied in time order, so that a
        cache restarting halfway never leaves later exposures' starts without earlier ends (which
        would make those look late). Until it succeeds the resync is retried every second and no
        exposure is declared late (for at most ``RESYNC_HOLD`` seconds)."""
        since = self.bus_time - RESYNC_MARGIN if self.bus_time else tai_now() - RESYNC_WINDOW
        samples: list[dict[str, Any]] = []
        for topic in ("startIntegration", "startReadout", "endReadout", "imageReadoutParameters", "endOfImageTelemetry"):
            try:
                reply = self.cache.request(
                    {"op": "range", "key": topic_key(self.cfg.camera, topic), "t0": since, "t1": 1e12}, timeout_ms=3000
                )
            except CacheUnavailable as exc:
                log.warning("cannot resynchronize from the cache yet (retrying): %s", exc)
                if self.resync_since is None:
                    self.resync_since = time.monotonic()
                return
            samples += [s for s in reply.get("samples", []) if isinstance(s, dict)]
        self.resync_since = None
        samples.sort(key=lambda s: s["sndStamp"] if isinstance(s.get("sndStamp"), (int, float)) else 0.0)
        replayed = sum(self.guarded("replayed camera event", self.apply_event, s, "cache") or 0 for s in samples)
        if replayed:
            log.info("resynchronized %d camera event(s) from the cache", replayed)

    def warm_up(self) -> None:
        """Pay the one-off costs (IERS tables, first FITS encoding) before the first exposure."""
        astro.preload()
        astro.tai_iso(tai_now())
        compose_header(self.cfg, self.kmap, self.templates, ExposureInputs("WARMUP", {}, {}, {}), tai_now())

    def on_event(self, frames: list[bytes]) -> None:
        try:
            msg = decode(frames)
        except EnvelopeError as exc:
            self.counts["bad_messages"] += 1
            log.warning("bad message from the listener ignored: %s", exc)
            return
        # The composer subscribes to camera events only, so listener sequence numbers skip by
        # design; a restarted listener (new incarnation) is what calls for a resync.
        st = self.gaps.check(msg.envelope)
        if st.duplicate:
            return
        if st.restarted:
            self.resync_from_cache()
        msg.payload["composerStamp"] = tai_now()
        self.guarded(msg.topic, self.apply_event, msg.payload, "listener", (msg.envelope.sender, msg.envelope.seq))
        self.check_deadlines()

    def guarded(self, what: str, handle: Any, *args: Any) -> Any:
        """``handle(*args)`` for one message: an unforeseen failure is logged with its traceback and
        counted, and the process goes on with the next message (a failure of this machine, such
        as an unwritable journal, still stops it: supervisord restarts it)."""
        try:
            return handle(*args)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - one message must never stop every later exposure
            self.counts["handler_errors"] += 1
            log.exception("%s could not be handled (%s: %s): ignored", what, type(exc).__name__, exc)
            return None

    def apply_event(self, sample: Any, source: str, seq: tuple[str, int] | None = None) -> int:
        """Record one camera event; finish the exposure at endOfImageTelemetry. Returns 1 if new."""
        topic = sample.get("topic") if isinstance(sample, dict) else None
        if topic not in CAMERA_EVENTS:
            return 0
        data = sample.get("data") if isinstance(sample.get("data"), dict) else {}
        name = data.get("imageName")
        if not isinstance(name, str) or not name:
            self.counts["events_without_image"] += 1
            log.warning("%s without an imageName ignored", topic)
            return 0
        if not IMAGE_NAME.fullmatch(name) or ".." in name:
            self.counts["bad_events"] += 1
            log.warning("%s with invalid imageName %r ignored", topic, name[:80])
            return 0
        if not isinstance(sample.get("sndStamp"), (int, float)) or isinstance(sample.get("sndStamp"), bool):
            self.counts["bad_events"] += 1
            log.warning("%s for %s has no usable private_sndStamp: ignored", topic, name)
            return 0
        t, note = bounded_event_time(sample, tai_now())
        if note:
            self.counts["event_times_not_believed"] += 1
            log.warning("%s of %s: %s", topic, name, note)
            sample = {**sample, "sndStamp": t, "sndStampSent": sample["sndStamp"], "timeNote": note}
        if name in self.skipped:
            return 0
        if topic == "startIntegration" and self.second_exposure(name, sample):
            return 0
        if name not in self.open and name not in self.done and not self.accepting(name):
            return 0
        if name in self.done:
            version, complete = self.done[name]
            if topic == "endOfImageTelemetry" and not complete and name in self.without_end:
                events = dict(self.done_events.get(name, {}))
                if topic not in events:
                    log.info("late endOfImageTelemetry for %s: reissuing its header complete", name)
                    events[topic] = sample
                    self.recompose(name, events=events)
                    return 1
            if source == "listener":
                self.counts["events_after_done"] += 1
                log.warning("%s for %s arrived after its header was written (v%d): ignored", topic, name, version)
            return 0
        exp = self.open.setdefault(name, OpenExposure(name))
        if topic in exp.events:
            if source == "listener":
                self.counts["duplicate_events"] += 1
                log.warning("duplicate %s for %s ignored", topic, name)
            return 0
        exp.events[topic] = sample
        if exp.deadline_tai is None:  # an exposure first seen by another event still gets a deadline
            exp.deadline_tai = float(sample["sndStamp"]) + self.cfg.end_deadline
            exp.deadline_wall = time.monotonic() + self.cfg.end_deadline
        if seq is not None:
            exp.last_seq = seq
        self.bus_time = max(self.bus_time, float(sample["sndStamp"]))
        if topic == "startIntegration":
            timeout = exposure_timeout(data)
            exp.deadline_tai = sample["sndStamp"] + timeout + self.cfg.end_deadline
            exp.deadline_wall = time.monotonic() + timeout + self.cfg.end_deadline
            log.info("exposure %s started (%.1f s)", name, usable_duration(data.get("exposureTime")) or 0.0)
        if (
            topic in PRECOMPOSE_AT
            and "startReadout" in exp.events
            and "endOfImageTelemetry" not in exp.events
            and source == "listener"
        ):
            self.precompose_due[name] = None  # run from the loop once no event is waiting
        if "endOfImageTelemetry" in exp.events:
            if "startIntegration" in exp.events or self.fill_missing_event(exp, "startIntegration", t):
                self.finish(exp, reasons=[])
                return 1
            # events re-delivered after a listener restart come topic by topic: give the start a moment
            exp.grace_wall = time.monotonic() + END_GRACE
        self.save()
        return 1

    def accepting(self, name: str) -> bool:
        """Headers are produced only while the CSC is ENABLED; others are reported skipped."""
        self.csc.poll()
        if self.csc.enabled:
            return True
        reason = f"CSC {self.cfg.csc} is {self.csc.state}, not ENABLED"
        self.skipped[name] = reason
        self.counts["skipped"] += 1
        log.warning("%s skipped: %s", name, reason)
        self.pub.send_multipart(self.ctl_sender.frames(f"ctl.skipped.{self.cfg.instrument}.{name}", {"imageName": name, "reason": reason}))
        self.record({"skipped": name, "reason": reason})
        return False

    def report_skipped(self, name: str, reason: str, t: float | None, **extra: Any) -> None:
        """An exposure without a header of its own: logged, counted, published on
        ``ctl.skipped.<instrument>.<imageName>`` and kept in the history (``hs-catchup list``)."""
        log.warning("%s: no header: %s", name, reason)
        if not extra.get("duplicate"):  # later events of this name are ignored (a reused name's are not)
            self.skipped[name] = reason
        body = {"imageName": name, "reason": reason, **extra}
        self.pub.send_multipart(self.ctl_sender.frames(f"ctl.skipped.{self.cfg.instrument}.{name}", body))
        entry: dict[str, Any] = {"duplicate" if extra.get("duplicate") else "skipped": name, "reason": reason}
        if t is not None:
            entry["t"] = t
        self.record(entry)

    def second_exposure(self, name: str, start: dict[str, Any]) -> bool:
        """True if this startIntegration is another exposure under an imageName already used (a
        camera fault): the name's header stays the first exposure's, and this one is reported
        once with the reason, never dropped silently nor written over the first one's header."""
        exp = self.open.get(name)
        first = exp.events.get("startIntegration") if exp is not None else None
        known = first.get("sndStampSent", first["sndStamp"]) if first else self.start_stamps.get(name)
        stamp = start.get("sndStampSent", start["sndStamp"])
        if known is None or abs(float(stamp) - float(known)) < 1e-6:
            return False  # the first exposure's own start, delivered again
        if (name, stamp) not in self.duplicates:
            self.duplicates.add((name, stamp))
            self.counts["duplicate_image_names"] += 1
            reason = (
                f"imageName used again by a second exposure started at {astro.tai_iso(start['sndStamp'])} TAI "
                f"(the first started at {astro.tai_iso(float(known))} TAI): no header written for the second one"
            )
            self.report_skipped(name, reason, float(stamp), duplicate=True)
        return True

    def set_aside_unstarted(self, exp: OpenExposure) -> bool:
        """An endOfImageTelemetry alone, for an image no startIntegration, startReadout,
        endReadout or imageReadoutParameters ever mentioned (on the bus or in the cache): spoofed
        or garbled, not an image. No header is announced for it; it is reported instead. False
        when the cache cannot be asked (the image may exist: it then gets its header)."""
        end = exp.events["endOfImageTelemetry"]
        t_end = float(end["sndStamp"])
        asked = [self.fill_missing_event(exp, topic, t_end) for topic in CAMERA_EVENTS if topic not in exp.events]
        if set(exp.events) != {"endOfImageTelemetry"} or None in asked:
            return False
        reason = "endOfImageTelemetry for an image never started (no other camera event of it on the bus or in the cache)"
        self.counts["set_aside"] += 1
        self.open.pop(exp.image_name, None)
        self.report_skipped(exp.image_name, reason, float(end["sndStamp"]))
        self.save()
        return True

    def fill_missing_event(self, exp: OpenExposure, topic: str, t1: float | None = None) -> bool | None:
        """Look up one camera event of this image in the cache's history (missed while down);
        None when the cache could not be asked."""
        t1 = t1 or tai_now()
        try:
            reply = self.cache.request(
                {"op": "range", "key": topic_key(self.cfg.camera, topic), "t0": t1 - FILL_WINDOW, "t1": 1e12}
            )
        except CacheUnavailable:
            return None
        for s in reversed(reply.get("samples", [])):
            if isinstance(s, dict) and isinstance(s.get("data"), dict) and s["data"].get("imageName") == exp.image_name:
                if _finite(s.get("sndStamp")):
                    t, note = bounded_event_time(s, tai_now())
                    exp.events[topic] = {**s, "sndStamp": t, "sndStampSent": s["sndStamp"], "timeNote": note} if note else s
                    return True
        return False

    def fill_missing_events(self, exp: OpenExposure, points: dict[str, float]) -> None:
        """Events this process missed (restart, gap) are looked up in the cache's history."""
        t1 = max(points.values()) if points else tai_now()
        for topic in ("startIntegration", "startReadout", "endReadout", "imageReadoutParameters"):
            if topic not in exp.events:
                self.fill_missing_event(exp, topic, t1)

    def finish(self, exp: OpenExposure, reasons: list[str], version: int | None = None) -> None:
        """Compose, send and journal one header (real time, late reissue and catch-up alike)."""
        points = collection_points(exp.events)
        self.fill_missing_events(exp, points)
        points = collection_points(exp.events)
        if "endOfImageTelemetry" not in exp.events and not reasons:
            reasons = ["endOfImageTelemetry not received"]
        if "startIntegration" not in exp.events:
            reasons = reasons + ["startIntegration not received"]
        reasons = reasons + [f"{t}: {ev['timeNote']}" for t, ev in exp.events.items() if ev.get("timeNote")]
        req = collection_request(self.cfg, self.kmap, points)
        if exp.last_seq[0]:
            req["after"] = {"sender": exp.last_seq[0], "seq": exp.last_seq[1]}
        known = {p: s for p, s in exp.early.items() if exp.early_points.get(p) == points.get(p)}
        for p in known:  # read at the provisional composition: only what is new is asked for now
            req["topics"].pop(p, None)
        t_collect = time.perf_counter()
        try:
            reply = self.collect(req)
            snapshots, windows = {**known, **reply.get("snapshots", {})}, reply.get("windows", {})
            if not reply.get("caught_up", True):
                log.warning("cache answered for %s before catching up with the listener", exp.image_name)
            for gap in reply.get("outages", []):
                reasons = reasons + [f"bus not observed from {gap[0]:.1f} to {gap[1]:.1f} (TAI): telemetry may be missing"]
        except CacheUnavailable as exc:
            log.error("%s: %s; header written from the camera events alone", exp.image_name, exc)
            snapshots, windows = {}, {}
            reasons = reasons + [f"telemetry unavailable: {exc}"]
            self.counts["cache_unavailable"] += 1
            self.pub.send_multipart(fault_frames(self.ctl_sender, self.cfg.instrument, ErrorCode.CACHE_UNREACHABLE, str(exc)))
        overrides, overrides_version = self.operator_cards()
        inputs = ExposureInputs(exp.image_name, exp.events, points, snapshots, windows, reasons, overrides, overrides_version)
        if version is None:
            version = int(self.done.get(exp.image_name, [0])[0]) + 1
        t0 = time.perf_counter()
        collect_s = t0 - t_collect
        header = self.compose(inputs, version)
        compose_s = time.perf_counter() - t0
        topic = f"hdr.{self.cfg.instrument}.{exp.image_name}"
        body = header.payload_json(composeSeconds=compose_s, collectSeconds=collect_s)  # one encoding, both paths
        self.pub.send_multipart(self.fast_sender.frames(topic, body))
        self.push.send_multipart(self.sender.frames(topic, body))
        self.done.pop(exp.image_name, None)
        self.done[exp.image_name] = [version, header.complete]
        start = exp.events.get("startIntegration")
        if start:
            self.start_stamps[exp.image_name] = float(start.get("sndStampSent", start["sndStamp"]))
        # only a header written without its end is reissued when the end comes (a header incomplete
        # for another reason is not made worse by a replayed end after a restart)
        noend = "endOfImageTelemetry" not in exp.events
        (self.without_end.add if noend else self.without_end.discard)(exp.image_name)
        self.record({"done": exp.image_name, "v": version, "complete": header.complete,
                     **({"t": self.start_stamps[exp.image_name]} if start else {}), **({"noend": True} if noend else {})})
        self.done_events[exp.image_name] = exp.events
        self.unacked[exp.image_name] = (time.monotonic(), version, body)
        self.recent[exp.image_name] = header.context
        while len(self.recent) > RECENT_HEADERS:
            self.recent.popitem(last=False)
        while len(self.done_events) > RECENT_HEADERS:
            self.done_events.pop(next(iter(self.done_events)))
        self.open.pop(exp.image_name, None)
        self.save()
        self.counts["headers" if header.complete else "headers_incomplete"] += 1
        self.report_bad_values(header.image_name, header.provenance)
        log.info(
            "%s composed v%d (%s, %d HDUs) in %.1f ms after %.1f ms collecting telemetry%s",
            exp.image_name,
            version,
            "complete" if header.complete else "INCOMPLETE: " + "; ".join(header.reasons),
            len(header.hdus),
            compose_s * 1000,
            collect_s * 1000,
            self.event_delays(exp.events.get("endOfImageTelemetry")),
        )

    def compose(self, inputs: ExposureInputs, version: int) -> ComposedHeader:
        """The header of one exposure, whatever its inputs: if composing fails, the header is
        composed again from less (the camera events alone, then nothing but the image's name and
        times) and is INCOMPLETE with the reason. One exposure's bad input never costs its header,
        stops this process or makes it crash again on the same input at every restart."""
        fallbacks = [
            ("header written from the camera events alone", dict(inputs.events), {}, {}, inputs.overrides),
            ("header written without its inputs", {}, {}, {}, {}),
        ]
        try:
            return compose_header(self.cfg, self.kmap, self.templates, inputs, tai_now(), version)
        except Exception as exc:  # noqa: BLE001 - a failure of one exposure's composition stays that exposure's
            failure = exc
        for what, events, snapshots, windows, overrides in fallbacks:
            self.counts["compose_failures"] += 1
            log.error("%s: composition failed (%s: %s): %s", inputs.image_name, type(failure).__name__, failure, what,
                      exc_info=failure)
            reasons = inputs.reasons + [f"composition failed ({type(failure).__name__}: {str(failure)[:200]}): {what}"]
            points = {k: v for k, v in inputs.points.items() if astro.usable_time(v)}
            try:
                return compose_header(
                    self.cfg, self.kmap, self.templates,
                    ExposureInputs(inputs.image_name, events, points, snapshots, windows, reasons, overrides, inputs.overrides_version),
                    tai_now(), version,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - try with less
                failure = exc
        raise failure

    @staticmethod
    def event_delays(ev: dict[str, Any] | None) -> str:
        """How long the end event took from its writer to the listener, and on to this process."""
        if not ev or not isinstance(ev.get("rcvStamp"), float) or not isinstance(ev.get("sndStamp"), float):
            return ""
        bus, hop = ev["rcvStamp"] - ev["sndStamp"], ev.get("composerStamp", ev["rcvStamp"]) - ev["rcvStamp"]
        on_bus = f"{bus * 1000:.1f} ms on the bus, " if 0.0 <= bus < 60.0 else ""  # a replayed night's stamps are old
        return f"; endOfImageTelemetry {on_bus}{hop * 1000:.1f} ms listener to composer"

    def precompose(self, exp: OpenExposure) -> None:
        """Compose the header provisionally at startReadout (and again when the readout geometry
        arrives) and throw it away.

        Everything that does not depend on the end of the exposure (astrometry, sensor WCS,
        per-sensor values, encoded sensor HDUs) is then memoized, so the real composition at
        endOfImageTelemetry only does what is new. Values are unchanged: the real one recomputes
        anything whose inputs differ.
        """
        if "startIntegration" not in exp.events:
            return
        t0 = time.perf_counter()
        points = collection_points(exp.events)
        req = collection_request(self.cfg, self.kmap, points)
        if exp.last_seq[0]:
            req["after"] = {"sender": exp.last_seq[0], "seq": exp.last_seq[1]}
        try:
            reply = self.cache.request(req, timeout_ms=2000)
        except CacheUnavailable:
            return
        if reply.get("caught_up", True) and not reply.get("outages"):
            # The start and readout points are seconds old by now: every sample stamped before
            # them has reached the cache, so their snapshots are final (the end point's are not).
            exp.early = {p: s for p, s in reply.get("snapshots", {}).items() if p in ("start", "readout")}
            exp.early_points = {p: points[p] for p in exp.early}
        inputs = ExposureInputs(
            exp.image_name, exp.events, points, reply.get("snapshots", {}), reply.get("windows", {}), []
        )
        try:
            compose_header(self.cfg, self.kmap, self.templates, inputs, tai_now(), 1).payload_json()
        except Exception as exc:  # noqa: BLE001 - only a head start: the real composition has its own defences
            self.counts["precompose_failures"] += 1
            log.warning("%s: provisional composition failed (%s: %s)", exp.image_name, type(exc).__name__, exc)
            return
        log.debug("%s precomposed in %.1f ms", exp.image_name, (time.perf_counter() - t0) * 1000)

    def precompose_next(self) -> None:
        """One due provisional composition, when nothing is waiting: an endOfImageTelemetry that
        is already queued is never kept waiting behind work it makes unnecessary."""
        name = next(iter(self.precompose_due))
        del self.precompose_due[name]
        exp = self.open.get(name)
        if exp is not None and "endOfImageTelemetry" not in exp.events:
            self.precompose(exp)

    def collect(self, req: dict[str, Any]) -> dict[str, Any]:
        """The cache's snapshots; a restarting cache gets a few tries before the header goes incomplete."""
        for attempt in range(CACHE_TRIES):
            try:
                return self.cache.request(req)
            except CacheUnavailable as exc:
                if attempt == CACHE_TRIES - 1:
                    raise
                log.warning("%s; trying again", exc)
        raise AssertionError("unreachable")

    def operator_cards(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Static cards set by operator command (CSC), applied from the next exposure."""
        self.csc.poll()
        return dict(self.csc.overrides), int(self.csc.overrides_version)

    def recompose(self, name: str, events: dict[str, Any] | None = None, same_version: bool = False) -> dict[str, Any]:
        """Compose an image again from its events (journal or cache): late events, catch-up."""
        exp = OpenExposure(name, dict(events or self.done_events.get(name, {})))
        self.fill_missing_events(exp, collection_points(exp.events))
        if "endOfImageTelemetry" not in exp.events:
            self.fill_missing_event(exp, "endOfImageTelemetry")
        if not exp.events:
            return {"imageName": name, "error": "no camera event of this image in the journal or the cache"}
        prev = int(self.done.get(name, [0])[0])
        version = prev if (same_version and prev) else prev + 1
        self.finish(exp, reasons=[], version=version)
        return {"imageName": name, "version": version, "complete": self.done[name][1]}

    def on_ack(self, frames: list[bytes]) -> None:
        try:
            entry = decode(frames).payload
            name, version = entry["imageName"], int(entry["version"])
        except (EnvelopeError, KeyError, TypeError, ValueError) as exc:
            self.counts["bad_acks"] += 1
            log.warning("bad acknowledgement from the publisher: %s", exc)
            return
        pending = self.unacked.get(name)
        if pending and pending[1] <= version:
            del self.unacked[name]
            self.save()

    def resend_unacked(self) -> None:
        """Headers the publisher has not acknowledged are sent again (it is idempotent)."""
        now = time.monotonic()
        for name, (sent, version, body) in list(self.unacked.items()):
            if now - sent > ACK_TIMEOUT:
                self.counts["resent"] += 1
                log.warning("%s v%s not acknowledged by the publisher: sent again", name, version)
                self.push.send_multipart(self.sender.frames(f"hdr.{self.cfg.instrument}.{name}", body))
                self.unacked[name] = (now, version, body)

    def on_request(self, frames: list[bytes]) -> None:
        """Per-sensor header requests: ``{op: sensor, imageName, sensor}`` on the ROUTER socket."""
        ident, rest = split_identity(frames)
        try:
            req = decode(rest).payload
            if not isinstance(req, dict):
                raise EnvelopeError("request payload is not an object")
            if req.get("op", "sensor") not in ("sensor", "recompose", "status"):
                raise KeyError(f"unknown op {req.get('op')!r}")
            op = req.get("op", "sensor")
            topic = f"ctl.reply.{op}"
            if op == "recompose":
                body = {"results": [self.recompose(n) for n in req["imageNames"]]}
            elif op == "status":
                body = {"counts": self.counts.as_dict(), "open": sorted(self.open), "done": self.done, "unacked": sorted(self.unacked)}
            else:
                image, sensor = req["imageName"], req["sensor"]
                ctx = self.recent.get(image)
                if ctx is None:
                    raise KeyError(f"{image} is not among the last {RECENT_HEADERS} headers composed")
                body = ctx.sensor_header(sensor)
                body["imageName"] = image
                body["version"] = self.done.get(image, [1])[0]
                topic = f"hdr.{self.cfg.instrument}.sensor"
        except (EnvelopeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.counts["bad_requests"] += 1
            log.warning("bad request: %s", exc)
            topic = f"hdr.{self.cfg.instrument}.sensor"
            body = {"error": str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)}
        self.router.send_multipart(ident + self.reply_sender.frames(topic, body))

    def report_bad_values(self, image: str, provenance: dict[str, Any]) -> None:
        """Values that arrived but could not be written (NaN, bad text...) are logged and counted."""
        for kw, prov in provenance.get("keywords", {}).items():
            why = prov.get("undefined", "")
            bad = why and not (why.startswith("no ") or why.startswith("stale"))
            for w in prov.get("warnings", []):
                self.counts["bad_values"] += 1
                log.warning("%s: %s: %s", image, kw, w)
            if bad:
                self.counts["bad_values"] += 1
                log.warning("%s: %s written undefined: %s (from %s)", image, kw, why, prov.get("topic"))
        for err in provenance.get("card_errors", []):
            self.counts["bad_values"] += 1
            log.warning("%s: %s", image, err)

    def publish_status(self) -> None:
        self.pub.send_multipart(
            self.ctl_sender.frames(
                f"ctl.status.composer.{self.cfg.instrument}",
                {"counts": self.counts.as_dict(), "open": sorted(self.open), "composed": len(self.done)},
            )
        )

    def check_deadlines(self) -> None:
        """An exposure is late when either the bus's event time or the wall clock passes its deadline."""
        now = time.monotonic()
        if self.resync_since is not None and now - self.resync_since < RESYNC_HOLD:
            return  # events this process missed are still to come from the cache
        for exp in list(self.open.values()):
            if self.guarded(f"deadline of {exp.image_name}", self.finish_if_due, exp, now) is None:
                # could not be finished: set aside with the reason rather than retried every second
                self.open.pop(exp.image_name, None)
                self.report_skipped(exp.image_name, "its header could not be written (see the composer log)", None)
                self.save()

    def finish_if_due(self, exp: OpenExposure, now: float) -> bool:
        if exp.grace_wall is not None and now > exp.grace_wall:
            if "startIntegration" in exp.events or not self.set_aside_unstarted(exp):
                self.finish(exp, reasons=[])
            return True
        late_bus = exp.deadline_tai is not None and self.bus_time > exp.deadline_tai
        late_wall = exp.deadline_wall is not None and now > exp.deadline_wall
        if (late_bus or late_wall) and "endOfImageTelemetry" not in exp.events:
            log.warning("%s: endOfImageTelemetry is late beyond the deadline: writing incomplete", exp.image_name)
            self.counts["late"] += 1
            self.finish(exp, reasons=["endOfImageTelemetry late beyond the deadline"])
        return True

    def run(self, stop: Stop) -> None:
        log.info("composer up for %s: events from %s", self.cfg.instrument, self.cfg.endpoints.listener_pub)
        last_check = time.monotonic()
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.acks, zmq.POLLIN)
        pacer = GcPacer()
        while not stop.requested:
            events = dict(poller.poll(0 if self.precompose_due else 100))
            if not events and self.precompose_due:
                self.precompose_next()
                continue
            pacer.step(quiet=not events and not any("startReadout" in e.events for e in self.open.values()))
            if self.sub in events:
                drain(self.sub, self.on_event)
            if self.acks in events:
                drain(self.acks, lambda frames: self.guarded("acknowledgement", self.on_ack, frames))
            if self.router in events:
                drain(self.router, lambda frames: self.guarded("request", self.on_request, frames))
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                if self.resync_since is not None:
                    self.resync_from_cache()
                self.check_deadlines()
                self.resend_unacked()
                self.publish_status()


def main(argv: list[str] | None = None) -> None:
    p = base_parser("hs-composer", __doc__.splitlines()[0])
    args = p.parse_args(argv)
    cfg = setup(args, "hs-composer")
    Composer(cfg).run(Stop())


if __name__ == "__main__":
    main()
