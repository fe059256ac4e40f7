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
from pathlib import Path
from typing import Any

import zmq

from header import astro
from header.compose import CAMERA_EVENTS, ComposedHeader, ExposureInputs, Templates, compose_header
from header.memo import BoundedMemo
from procs.common import Counters, GcPacer, Stop, drain, run_process
from procs.exposure import (  # noqa: F401 - the rules' helpers, also used from here by tools and tests
    DONE_KEPT,
    PRECOMPOSE_AT,
    RECENT_HEADERS,
    REPLAYED,
    Action,
    Compose,
    ExposureMachine,
    FindEvents,
    Journal,
    Now,
    OpenExposure,
    Record,
    Resync,
    Send,
    Skip,
    bounded_event_time,
    collection_points,
    exposure_timeout,
    replay_order,
)
from procs.journal import AppendLog, SnapshotWriter, read_json
from protocols.config import InstanceConfig, KeywordMap, load_keyword_map, load_template
from protocols.envelope import EnvelopeError, GapTracker, Sender, decode, sender_id, split_identity, tai_now
from protocols.csc_state import CscStateFollower, ErrorCode, fault_frames
from protocols.messages import (
    COMPOSER_REQUESTS,
    Acknowledgement,
    After,
    CacheClient,
    CacheUnavailable,
    CollectReply,
    CollectRequest,
    ComposerStatus,
    ErrorReply,
    ProcessStatus,
    RangeReply,
    RangeRequest,
    Recomposed,
    RecomposeReply,
    RecomposeRequest,
    Reply,
    SensorReply,
    Skipped,
    StatusRequest,
    Window,
    decode_request,
    topic_key,
)
from protocols.names import IMAGE_NAME  # noqa: F401 - one definition, checked by tests

log = logging.getLogger("composer")
CACHE_TRIES = 4  # cache requests (5 s each) before a header is written without telemetry
FILL_WINDOW = 4 * 3600.0  # s of cache history searched for an image's missing events
CSC_WAIT = 5.0  # s a starting composer waits for the CSC's state (it may be restarting too) before replaying


#: Fields read besides each keyword's own: sensor order and makers, keyed-array keys, time series origin.
AUX_FIELDS = ("ccdLocation", "ccdManufacturer", "location", "additionalKeys", "cRioTimestamp")


def needed_fields(kmap: KeywordMap) -> dict[str, list[str]]:
    """Per topic key, the fields a header reads: the cache answers with those alone."""
    out: dict[str, set[str]] = {}
    for src in kmap.keywords:
        out.setdefault(src.topic_key, set(AUX_FIELDS)).add(src.field)
    return {k: sorted(v) for k, v in out.items()}


def collection_request(cfg: InstanceConfig, kmap: KeywordMap, points: dict[str, float]) -> CollectRequest:
    """The cache request for one header: topic keys per collection point, monitor windows, and the
    fields each topic is read for."""
    topics, monitored, fields = _request_plan(cfg.camera, kmap, tuple(sorted(points)))
    windows = []
    if "start" in points:
        windows = [Window(k, points["start"], points.get("end", points["start"])) for k in monitored]
    return CollectRequest(points, dict(topics), windows, fields)


_Plan = tuple[dict[str, list[str]], list[str], dict[str, list[str]]]
_PLANS: BoundedMemo[_Plan] = BoundedMemo(64)  # by camera, keyword map (its values) and points


def _request_plan(camera: str, kmap: KeywordMap, point_names: tuple[str, ...]) -> _Plan:
    """Topics per point, monitored topics and fields of a keyword map: the same for every header."""
    memo_key = (camera, kmap.fingerprint, point_names)
    got = _PLANS.get(memo_key)
    if got is not None:
        return got
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
    return _PLANS.put(memo_key, ({p: sorted(k) for p, k in topics.items()}, monitored, fields))


def end_event_stamps(events: dict[str, Any]) -> dict[str, float]:
    """When the listener and this process received the endOfImageTelemetry a header answers (TAI
    unix), for the payload: a reader can tell the bus and the hops from the work after them."""
    ev = events.get("endOfImageTelemetry") or {}
    stamps = {"listenerStamp": ev.get("rcvStamp"), "composerStamp": ev.get("composerStamp")}
    return {k: v for k, v in stamps.items() if isinstance(v, float) and math.isfinite(v)}


class Composer:
    """The process around :class:`ExposureMachine`: socket traffic in as the machine's inputs, its
    actions out as socket traffic and journal writes."""

    def __init__(self, cfg: InstanceConfig):
        self.cfg = cfg
        self.kmap = load_keyword_map(cfg)
        self.templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
        self.counts = Counters()
        self.machine = ExposureMachine(cfg.instrument, cfg.csc, cfg.end_deadline, self.counts)
        self.csc = CscStateFollower(cfg, role="composer")
        self.state_path = Path(cfg.state_dir) / cfg.instrument / "composer.json"
        self.journal = SnapshotWriter(self.state_path)  # off the event path: see SnapshotWriter
        self.history = AppendLog(Path(cfg.state_dir) / cfg.instrument / "composer-history.jsonl")
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
        self.sender = Sender(sender_id("composer", cfg.instrument))
        self.fast_sender = Sender(self.sender.sender)  # hdr.* only: forwarders see contiguous numbers
        self.ctl_sender = Sender(sender_id("composer-ctl", cfg.instrument))  # status, skipped, faults
        self.reply_sender = Sender(sender_id("composer-reply", cfg.instrument))  # ROUTER answers
        self.cache = CacheClient(cfg.endpoints.cache_router, Sender(self.sender.sender + "/req"), timeout_s=5.0)
        self.warm_up()
        self.csc.refresh(CSC_WAIT)  # answered at once when the CSC runs; replayed exposures need its state
        self.restore()

    # The machine's state, read by the status answer and by tests.
    @property
    def open(self) -> dict[str, OpenExposure]:
        return self.machine.open

    @property
    def done(self) -> dict[str, list[Any]]:
        return self.machine.done

    @property
    def unacked(self) -> dict[str, tuple[float, int, bytes]]:
        return self.machine.unacked

    @staticmethod
    def now() -> Now:
        return Now(tai_now(), time.monotonic())

    # -- actions --------------------------------------------------------------------------------
    def perform(self, actions: list[Action]) -> bool:
        """Carry the machine's actions out, in order; an answer's follow-up actions come first."""
        for action in actions:
            if isinstance(action, FindEvents):
                found = {topic: self.find_events(topic, action.t1) for topic in action.topics}
                self.perform(self.machine.found(action, found, self.now()))
            elif isinstance(action, Compose):
                self.compose_and_send(action)
            elif isinstance(action, Send):
                topic = f"hdr.{self.cfg.instrument}.{action.image_name}"
                if not action.resend:  # one encoding, both paths
                    self.pub.send_multipart(self.fast_sender.frames(topic, action.body))
                self.push.send_multipart(self.sender.frames(topic, action.body))
            elif isinstance(action, Record):
                self.history.append(action.entry)
                if self.history.lines > 2 * DONE_KEPT:
                    self.history.compact(self.machine.compacted())
            elif isinstance(action, Journal):
                self.journal.put(self.machine.snapshot())
            elif isinstance(action, Skip):
                body = Skipped(action.image_name, action.reason, action.duplicate).encode()
                self.pub.send_multipart(self.ctl_sender.frames(f"ctl.skipped.{self.cfg.instrument}.{action.image_name}", body))
            elif isinstance(action, Resync):
                self.replay(action)
        return True

    def find_events(self, topic: str, t1: float | None) -> list[Any] | None:
        """The cache's history of one camera topic up to now from ``t1 - FILL_WINDOW``; None when
        the cache could not be asked."""
        t1 = t1 or tai_now()
        try:
            return self.cache.ask(RangeRequest(topic_key(self.cfg.camera, topic), t1 - FILL_WINDOW, 1e12), RangeReply).samples
        except CacheUnavailable:
            return None

    def restore(self) -> None:
        """Resume after a restart: reopen journaled exposures, recompose unacknowledged headers,
        and catch up with camera events published while this process was down (from the cache)."""
        self.perform(self.machine.restore(read_json(self.state_path, {}), list(self.history.load()), self.now()))

    def resync_from_cache(self) -> None:
        self.perform([self.machine.resync(self.now())])

    def replay(self, resync: Resync) -> None:
        """Replay camera events the cache holds since the journal's bus time (clone pattern).

        All of them or none: the events are fetched first and applied in time order, so that a
        cache restarting halfway never leaves later exposures' starts without earlier ends (which
        would make those look late). Until it succeeds the resync is retried every second and no
        exposure is declared late (for at most ``RESYNC_HOLD`` seconds)."""
        samples: list[Any] = []
        for topic in REPLAYED:
            try:
                reply = self.cache.ask(RangeRequest(topic_key(self.cfg.camera, topic), resync.since, 1e12), RangeReply, timeout_ms=3000)
            except CacheUnavailable as exc:
                log.warning("cannot resynchronize from the cache yet (retrying): %s", exc)
                self.machine.resync_failed(self.now())
                return
            samples += reply.samples
        self.machine.resynced()
        replayed = sum(self.guarded("replayed camera event", self.apply_event, s, "cache") or 0 for s in replay_order(samples))
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
        # the listener sends camera topics one sample per message; a batch is taken in its order
        for sample in msg.payload if isinstance(msg.payload, list) else [msg.payload]:
            sample["composerStamp"] = tai_now()
            self.guarded(msg.topic, self.apply_event, sample, "listener", (msg.envelope.sender, msg.envelope.seq))
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
        """One camera event into the machine, its actions carried out. Returns 1 if new."""
        self.csc.poll()
        new, actions = self.machine.event(sample, source, self.now(), self.csc.state, seq)
        self.perform(actions)
        return new

    def compose_and_send(self, job: Compose) -> None:
        """Collect the telemetry of one exposure, compose its header and carry out what the
        machine does with it (send, record, journal)."""
        exp, reasons = job.exp, job.reasons
        req = collection_request(self.cfg, self.kmap, job.points)
        if job.after is not None:
            req.after = After(*job.after)
        for p in job.known:  # read at the provisional composition: only what is new is asked for now
            req.topics.pop(p, None)
        t_collect = time.perf_counter()
        try:
            reply = self.collect(req)
            snapshots, windows = {**job.known, **reply.snapshots}, reply.windows
            if not reply.caught_up:
                log.warning("cache answered for %s before catching up with the listener", exp.image_name)
            for gap in reply.outages or []:
                reasons = reasons + [f"bus not observed from {gap[0]:.1f} to {gap[1]:.1f} (TAI): telemetry may be missing"]
        except CacheUnavailable as exc:
            log.error("%s: %s; header written from the camera events alone", exp.image_name, exc)
            snapshots, windows = {}, {}
            reasons = reasons + [f"telemetry unavailable: {exc}"]
            self.counts["cache_unavailable"] += 1
            self.pub.send_multipart(fault_frames(self.ctl_sender, self.cfg.instrument, ErrorCode.CACHE_UNREACHABLE, str(exc)))
        overrides, overrides_version = self.operator_cards()
        inputs = ExposureInputs(exp.image_name, exp.events, job.points, snapshots, windows, reasons, overrides, overrides_version)
        t0 = time.perf_counter()
        collect_s = t0 - t_collect
        header = self.compose(inputs, job.version)
        compose_s = time.perf_counter() - t0
        body = header.payload_json(composeSeconds=compose_s, collectSeconds=collect_s, **end_event_stamps(exp.events))
        after = self.machine.composed(job, header.complete, body, self.now())
        self.recent[exp.image_name] = header.context
        while len(self.recent) > RECENT_HEADERS:
            self.recent.popitem(last=False)
        self.perform(after)
        self.report_bad_values(header.image_name, header.provenance)
        log.info(
            "%s composed v%d (%s, %d HDUs) in %.1f ms after %.1f ms collecting telemetry%s",
            exp.image_name,
            job.version,
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
            req.after = After(*exp.last_seq)
        try:
            reply = self.cache.ask(req, CollectReply, timeout_ms=2000)
        except CacheUnavailable:
            return
        if reply.caught_up and not reply.outages:
            # The start and readout points are seconds old by now: every sample stamped before
            # them has reached the cache, so their snapshots are final (the end point's are not).
            self.machine.keep_early(exp, reply.snapshots, points)
        inputs = ExposureInputs(exp.image_name, exp.events, points, reply.snapshots, reply.windows, [])
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
        exp = self.machine.next_precompose()
        if exp is not None:
            self.precompose(exp)

    def collect(self, req: CollectRequest) -> CollectReply:
        """The cache's snapshots; a restarting cache gets a few tries before the header goes incomplete."""
        for attempt in range(CACHE_TRIES):
            try:
                return self.cache.ask(req, CollectReply)
            except CacheUnavailable as exc:
                if attempt == CACHE_TRIES - 1:
                    raise
                log.warning("%s; trying again", exc)
        raise AssertionError("unreachable")

    def operator_cards(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Static cards set by operator command (CSC), applied from the next exposure."""
        self.csc.poll()
        return dict(self.csc.overrides), int(self.csc.overrides_version)

    def recompose(self, name: str, events: dict[str, Any] | None = None, same_version: bool = False) -> Recomposed:
        """Compose an image again from its events (journal or cache): late events, catch-up."""
        self.perform(self.machine.recompose(name, self.now(), events, same_version))
        error = self.machine.recompose_errors.pop(name, None)
        if error is not None:
            return Recomposed(name, error=error)
        version, complete = self.done[name]
        return Recomposed(name, version, complete)

    def on_ack(self, frames: list[bytes]) -> None:
        try:
            ack = Acknowledgement.decode(decode(frames).payload)
        except EnvelopeError as exc:
            self.counts["bad_acks"] += 1
            log.warning("bad acknowledgement from the publisher: %s", exc)
            return
        self.perform(self.machine.acked(ack.imageName, ack.version))

    def resend_unacked(self) -> None:
        """Headers the publisher has not acknowledged are sent again (it is idempotent)."""
        self.perform(self.machine.resends(self.now()))

    def on_request(self, frames: list[bytes]) -> None:
        """Requests on the ROUTER socket: per-sensor headers (``sensor``, the default op),
        ``recompose`` (catch-up) and ``status``."""
        ident, rest = split_identity(frames)
        reply: Reply
        try:
            req = decode_request(decode(rest).payload, COMPOSER_REQUESTS, default_op="sensor")
            topic = f"ctl.reply.{req.op}"
            if isinstance(req, RecomposeRequest):
                reply = RecomposeReply([self.recompose(n) for n in req.imageNames])
            elif isinstance(req, StatusRequest):
                reply = ComposerStatus(self.counts.as_dict(), sorted(self.open), self.done, sorted(self.unacked))
            else:
                image, sensor = req.imageName, req.sensor
                ctx = self.recent.get(image)
                if ctx is None:
                    raise KeyError(f"{image} is not among the last {RECENT_HEADERS} headers composed")
                got = ctx.sensor_header(sensor)
                reply = SensorReply(got["sensor"], got["cards"], got["segments"], image, self.done.get(image, [1])[0])
                topic = f"hdr.{self.cfg.instrument}.sensor"
        except (EnvelopeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.counts["bad_requests"] += 1
            log.warning("bad request: %s", exc)
            topic = f"hdr.{self.cfg.instrument}.sensor"
            reply = ErrorReply(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
        self.router.send_multipart(ident + self.reply_sender.frames(topic, reply.encode()))

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
                ProcessStatus(self.counts.as_dict(), open=sorted(self.open), composed=len(self.done)).encode(),
            )
        )

    def check_deadlines(self) -> None:
        """Exposures whose end's grace is over or whose end is late are finished (see the machine)."""
        for name, actions in self.machine.deadlines(self.now()):
            if self.guarded(f"deadline of {name}", self.perform, actions) is None:
                # could not be finished: set aside with the reason rather than retried every second
                self.perform(self.machine.abandon(name))

    def run(self, stop: Stop) -> None:
        log.info("composer up for %s: events from %s", self.cfg.instrument, self.cfg.endpoints.listener_pub)
        last_check = time.monotonic()
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.acks, zmq.POLLIN)
        pacer = GcPacer()
        while not stop.requested:
            ready = self.machine.precompose_ready()
            events = dict(poller.poll(0 if ready else 100))
            if not events and ready:
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
                if self.machine.resync_since is not None:
                    self.resync_from_cache()
                self.check_deadlines()
                self.resend_unacked()
                self.publish_status()
                self.journal.check()  # a journal that cannot be written stops the process
        self.journal.close()


def main(argv: list[str] | None = None) -> None:
    run_process("hs-composer", __doc__, lambda cfg: Composer(cfg).run, argv)


if __name__ == "__main__":
    main()
