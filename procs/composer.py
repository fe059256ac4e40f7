"""hs-composer: follows the camera's events and composes each image's header.

SUBscribes to the listener's camera events. An exposure opens at startIntegration; at
endOfImageTelemetry (or when it is late beyond the deadline) the composer asks the cache for the
snapshots as of each collection point's own event time, composes the header (pure code in
:mod:`header.compose`), PUSHes it to the publisher and PUBlishes it on the fast path
(``hdr.<instrument>.<imageName>``). Overlapping exposures are independent entries.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from header import astro
from header.compose import CAMERA_EVENTS, ExposureInputs, Templates, compose_header
from procs.common import Counters, GcPacer, Stop, base_parser, drain, setup
from procs.journal import AppendLog, read_json, write_json_atomic
from protocols.config import InstanceConfig, KeywordMap, load_keyword_map, load_template
from protocols.envelope import EnvelopeError, GapTracker, Sender, decode, sender_id, split_identity, tai_now
from protocols.csc_state import CscStateFollower, ErrorCode, fault_frames
from protocols.messages import CacheClient, CacheUnavailable, topic_key
from protocols.names import IMAGE_NAME

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
        points["readout"] = start["sndStamp"] + float(start["data"].get("exposureTime") or 0.0)
    end = ev.get("endOfImageTelemetry")
    if end:
        points["end"] = end["sndStamp"]
        points.setdefault("start", end["sndStamp"])
        points.setdefault("readout", end["sndStamp"])
    elif points:
        points["end"] = max(points.values())
    return points


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
            self.history.compact(
                [{"done": n, "v": v, "complete": c} for n, (v, c) in self.done.items()]
                + [{"skipped": n, "reason": r} for n, r in self.skipped.items()]
            )

    def restore(self) -> None:
        """Resume after a restart: reopen journaled exposures, recompose unacknowledged headers,
        and catch up with camera events published while this process was down (from the cache)."""
        state = read_json(self.state_path, {})
        self.done = {k: list(v) for k, v in state.get("done", {}).items()}  # journals of earlier releases
        self.bus_time = float(state.get("bus_time", 0.0))
        self.skipped = dict(state.get("skipped", {}))
        for rec in self.history.load():
            if "done" in rec:
                self.done.pop(rec["done"], None)
                self.done[rec["done"]] = [int(rec.get("v", 1)), bool(rec.get("complete", True))]
            elif "skipped" in rec:
                self.skipped[rec["skipped"]] = str(rec.get("reason", ""))
        redo = [n for n in state.get("unacked", []) if n in self.done]
        for name, rec in state.get("open", {}).items():
            if name in self.done:  # composed and logged, killed before the snapshot: send it again
                redo.append(name)
                self.done_events[name] = dict(rec.get("events", {}))
                continue
            exp = OpenExposure(name, dict(rec.get("events", {})))
            exp.deadline_tai = rec.get("deadline_tai")
            if exp.deadline_tai is not None:
                exp.deadline_wall = time.monotonic() + max(0.0, exp.deadline_tai - self.bus_time)
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
        replayed = sum(self.apply_event(s, source="cache") for s in samples)
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
        self.apply_event(msg.payload, source="listener", seq=(msg.envelope.sender, msg.envelope.seq))
        self.check_deadlines()

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
        if not isinstance(sample.get("sndStamp"), (int, float)):
            self.counts["bad_events"] += 1
            log.warning("%s for %s has no usable private_sndStamp: ignored", topic, name)
            return 0
        if name in self.skipped:
            return 0
        if name not in self.open and name not in self.done and not self.accepting(name):
            return 0
        if name in self.done:
            version, complete = self.done[name]
            if topic == "endOfImageTelemetry" and not complete:
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
            timeout = float(data.get("timeout") or 0) or float(data.get("exposureTime") or 0) + 30.0
            exp.deadline_tai = sample["sndStamp"] + timeout + self.cfg.end_deadline
            exp.deadline_wall = time.monotonic() + timeout + self.cfg.end_deadline
            log.info("exposure %s started (%.1f s)", name, float(data.get("exposureTime") or 0))
        if (
            topic in PRECOMPOSE_AT
            and "startReadout" in exp.events
            and "endOfImageTelemetry" not in exp.events
            and source == "listener"
        ):
            self.precompose_due[name] = None  # run from the loop once no event is waiting
        if "endOfImageTelemetry" in exp.events:
            if "startIntegration" in exp.events or self.fill_missing_event(exp, "startIntegration"):
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

    def fill_missing_event(self, exp: OpenExposure, topic: str, t1: float | None = None) -> bool:
        """Look up one camera event of this image in the cache's history (missed while down)."""
        t1 = t1 or tai_now()
        try:
            reply = self.cache.request(
                {"op": "range", "key": topic_key(self.cfg.camera, topic), "t0": t1 - FILL_WINDOW, "t1": 1e12}
            )
        except CacheUnavailable:
            return False
        for s in reversed(reply.get("samples", [])):
            if s.get("data", {}).get("imageName") == exp.image_name:
                exp.events[topic] = s
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
        header = compose_header(self.cfg, self.kmap, self.templates, inputs, tai_now(), version)
        compose_s = time.perf_counter() - t0
        topic = f"hdr.{self.cfg.instrument}.{exp.image_name}"
        body = header.payload_json(composeSeconds=compose_s, collectSeconds=collect_s)  # one encoding, both paths
        self.pub.send_multipart(self.fast_sender.frames(topic, body))
        self.push.send_multipart(self.sender.frames(topic, body))
        self.done.pop(exp.image_name, None)
        self.done[exp.image_name] = [version, header.complete]
        self.record({"done": exp.image_name, "v": version, "complete": header.complete})
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
        compose_header(self.cfg, self.kmap, self.templates, inputs, tai_now(), 1).payload_json()
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
            if exp.grace_wall is not None and now > exp.grace_wall:
                self.finish(exp, reasons=[])
                continue
            late_bus = exp.deadline_tai is not None and self.bus_time > exp.deadline_tai
            late_wall = exp.deadline_wall is not None and now > exp.deadline_wall
            if (late_bus or late_wall) and "endOfImageTelemetry" not in exp.events:
                log.warning("%s: endOfImageTelemetry is late beyond the deadline: writing incomplete", exp.image_name)
                self.counts["late"] += 1
                self.finish(exp, reasons=["endOfImageTelemetry late beyond the deadline"])

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
                drain(self.acks, self.on_ack)
            if self.router in events:
                drain(self.router, self.on_request)
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
