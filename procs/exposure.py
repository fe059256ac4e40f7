"""The rules of an exposure's life, with no sockets, files or clocks: a state machine.

Inputs are camera events, the cache's answers, acknowledgements from the publisher and clock ticks
(the time is always passed in as :class:`Now`); outputs are actions (:class:`FindEvents`,
:class:`Compose`, :class:`Send`, :class:`Record`, :class:`Journal`, :class:`Skip`, :class:`Resync`)
that the composer process turns into socket traffic and file writes, feeding the answers back in.
Real time, a restart's resync and catch-up all go through the same machine.

Which events open and close an exposure: any camera event opens it; endOfImageTelemetry closes it
when its startIntegration is known (seen or found in the cache), else after ``END_GRACE`` (an end
for an image nothing else ever mentioned is set aside, not announced). An exposure whose end does
not come by its deadline (startIntegration's timeout plus ``end_deadline``, on the bus's event clock
or the monotonic clock, whichever passes first) is written INCOMPLETE; the late end then reissues it
as version 2. A header unacknowledged for ``ACK_TIMEOUT`` is sent again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Union

from header import astro
from header.compose import CAMERA_EVENTS, usable_duration
from procs.common import Counters
from protocols.names import IMAGE_NAME
from protocols.salrecord import FUTURE_SLACK

log = logging.getLogger("composer")
DONE_KEPT = 5000  # composed images remembered in the journal
ACK_TIMEOUT = 5.0  # s before an unacknowledged header is sent to the publisher again
RESYNC_MARGIN = 120.0  # s of bus time replayed from the cache after a restart or a gap
RESYNC_WINDOW = 3600.0  # s replayed when the journal has no bus time
RESYNC_HOLD = 30.0  # s without deadlines while a resync from the cache is pending
END_GRACE = 1.0  # s to wait for an exposure's other events when its end arrives first
PRECOMPOSE_AT = ("startReadout", "imageReadoutParameters")  # the readout geometry comes with the latter
RECENT_HEADERS = 20  # headers kept in memory to answer per-sensor requests
PAST_SLACK = 366 * 86400.0  # s behind its reception beyond which an event's stamp is not believed
DEFAULT_TIMEOUT_EXTRA = 30.0  # s after the exposure time when startIntegration gives no usable timeout
BEFORE_END = ("startIntegration", "startReadout", "endReadout", "imageReadoutParameters")
REPLAYED = BEFORE_END + ("endOfImageTelemetry",)  # camera topics replayed from the cache after a restart
NEVER_STARTED = "endOfImageTelemetry for an image never started (no other camera event of it on the bus or in the cache)"


@dataclass(frozen=True)
class Now:
    """The present, as the caller read it: TAI seconds (event clock) and monotonic seconds."""

    tai: float
    mono: float


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


# -- actions ----------------------------------------------------------------------------------
@dataclass
class FindEvents:
    """Ask the cache's history for camera events of one image (``t1``: the search's end time,
    None for now); answer with :meth:`ExposureMachine.found`."""

    exp: OpenExposure
    topics: tuple[str, ...]
    t1: float | None
    then: str  # "start" (end before start), "set_aside" (grace over), "finish", "recompose"
    reasons: list[str] = field(default_factory=list)
    version: int | None = None


@dataclass
class Compose:
    """Collect the snapshots at ``points`` from the cache (less the ``known`` ones), compose the
    header and answer with :meth:`ExposureMachine.composed`."""

    exp: OpenExposure
    points: dict[str, float]
    reasons: list[str]
    version: int
    after: tuple[str, int] | None  # the listener's (sender, seq) the cache must have applied first
    known: dict[str, dict[str, Any]]


@dataclass
class Send:
    """Publish a composed header (fast path and publisher), or send it again (``resend``)."""

    image_name: str
    version: int
    body: bytes
    resend: bool = False


@dataclass
class Record:
    """One line into the append-only history (composed, skipped or duplicate image)."""

    entry: dict[str, Any]


@dataclass
class Journal:
    """Write :meth:`ExposureMachine.snapshot` to the journal."""


@dataclass
class Skip:
    """Publish ``ctl.skipped`` for an image without a header of its own."""

    image_name: str
    reason: str
    duplicate: bool = False  # a second exposure under an imageName already used


@dataclass
class Resync:
    """Replay the cache's camera events since ``since``; answer with :meth:`ExposureMachine.resynced`
    (in time order, from :func:`replay_order`) or :meth:`ExposureMachine.resync_failed`."""

    since: float


Action = Union[FindEvents, Compose, Send, Record, Journal, Skip, Resync]


# -- pure rules ---------------------------------------------------------------------------------
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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


def bounded(sample: dict[str, Any], now_tai: float) -> dict[str, Any]:
    """The sample as it counts: an unbelievable stamp replaced by its reception time, with a note."""
    t, note = bounded_event_time(sample, now_tai)
    return {**sample, "sndStamp": t, "sndStampSent": sample["sndStamp"], "timeNote": note} if note else sample


def pick_event(samples: list[Any], image_name: str, now_tai: float) -> dict[str, Any] | None:
    """The latest sample of this image among a cache ``range`` answer's, time-bounded."""
    for s in reversed(samples):
        if isinstance(s, dict) and isinstance(s.get("data"), dict) and s["data"].get("imageName") == image_name:
            if _finite(s.get("sndStamp")):
                return bounded(s, now_tai)
    return None


def replay_order(samples: list[Any]) -> list[dict[str, Any]]:
    """Replayed camera events in time order (all topics together), samples that are not objects dropped."""
    good = [s for s in samples if isinstance(s, dict)]
    good.sort(key=lambda s: s["sndStamp"] if isinstance(s.get("sndStamp"), (int, float)) else 0.0)
    return good


# -- the machine --------------------------------------------------------------------------------
class ExposureMachine:
    """Every open, composed, skipped and unacknowledged exposure of one instrument, and the rules
    that move them along. Each input returns the actions it calls for, in order; an action that
    asks something (:class:`FindEvents`, :class:`Compose`, :class:`Resync`) is answered by calling
    the matching method, which returns the next actions."""

    def __init__(self, instrument: str, csc: str, end_deadline: float, counts: Counters | None = None):
        self.instrument = instrument
        self.csc = csc
        self.end_deadline = end_deadline
        self.counts = counts if counts is not None else Counters()
        self.open: dict[str, OpenExposure] = {}
        self.done: dict[str, list[Any]] = {}  # imageName -> [version, complete] composed
        self.unacked: dict[str, tuple[float, int, bytes]] = {}  # imageName -> (sent, version, payload JSON)
        self.done_events: dict[str, dict[str, Any]] = {}  # recent images' events, for reissues
        self.skipped: dict[str, str] = {}  # imageName -> why no header was produced
        self.start_stamps: dict[str, float] = {}  # imageName -> its startIntegration's stamp (composed images)
        self.without_end: set[str] = set()  # images whose latest header was written without endOfImageTelemetry
        self.duplicates: set[tuple[str, float]] = set()  # second exposures under a used imageName, reported
        self.bus_time = 0.0  # latest camera event time seen: the deadline clock of replayed nights
        self.precompose_due: dict[str, None] = {}  # exposures to compose provisionally, in order
        self.resync_since: float | None = None  # when a resync from the cache first failed
        self.recompose_errors: dict[str, str] = {}  # imageName -> why it could not be recomposed (read once)

    # -- journal --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The journal: open exposures and unacknowledged headers (composed and skipped images
        go to the append-only history instead)."""
        return {
            "open": {n: {"events": e.events, "deadline_tai": e.deadline_tai} for n, e in self.open.items()},
            "unacked": sorted(self.unacked),
            "bus_time": self.bus_time,
        }

    def compacted(self) -> list[dict[str, Any]]:
        """Forget all but the last ``DONE_KEPT`` images; the history lines that remember them."""
        self.done = dict(list(self.done.items())[-DONE_KEPT:])
        self.skipped = dict(list(self.skipped.items())[-DONE_KEPT:])
        self.start_stamps = {n: t for n, t in self.start_stamps.items() if n in self.done}
        self.without_end &= set(self.done)
        self.duplicates = set(sorted(self.duplicates, key=lambda d: d[1])[-DONE_KEPT:])
        return (
            [{"done": n, "v": v, "complete": c, **({"t": self.start_stamps[n]} if n in self.start_stamps else {}),
              **({"noend": True} if n in self.without_end else {})} for n, (v, c) in self.done.items()]
            + [{"skipped": n, "reason": r} for n, r in self.skipped.items()]
            + [{"duplicate": n, "t": t, "reason": "imageName used again by another exposure"} for n, t in self.duplicates]
        )  # fmt: skip

    def restore(self, state: dict[str, Any], history: list[dict[str, Any]], now: Now) -> list[Action]:
        """Resume after a restart from the journal and the history: reopen journaled exposures,
        recompose unacknowledged headers, then resync from the cache."""
        self.done = {k: list(v) for k, v in state.get("done", {}).items()}  # journals of earlier releases
        bus_time = state.get("bus_time", 0.0)
        # a journal written before event times were bounded may hold a stamp from the future
        self.bus_time = min(float(bus_time), now.tai + FUTURE_SLACK) if _finite(bus_time) else 0.0
        self.skipped = dict(state.get("skipped", {}))
        for rec in history:
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
                limit = max(self.bus_time, now.tai) + exposure_timeout({}) + self.end_deadline
                exp.deadline_tai = float(deadline) if _finite(deadline) and deadline <= limit else limit
                exp.deadline_wall = now.mono + max(0.0, exp.deadline_tai - self.bus_time)
            if "endOfImageTelemetry" in exp.events and "startIntegration" not in exp.events:
                exp.grace_wall = now.mono + END_GRACE  # decided once the cache is asked again
            self.open[name] = exp
        if self.open or redo:
            log.info("resuming: %d open exposure(s), %d header(s) awaiting acknowledgement", len(self.open), len(redo))
        actions: list[Action] = []
        for name in redo:
            actions += self.recompose(name, now, same_version=True)
        return actions + [self.resync(now)]

    # -- resync ---------------------------------------------------------------------------
    def resync(self, now: Now) -> Resync:
        """The replay that catches up with camera events published while this process was down."""
        return Resync(self.bus_time - RESYNC_MARGIN if self.bus_time else now.tai - RESYNC_WINDOW)

    def resync_failed(self, now: Now) -> None:
        """The cache could not replay: retried every second; no exposure is late meanwhile
        (for at most ``RESYNC_HOLD`` seconds)."""
        if self.resync_since is None:
            self.resync_since = now.mono

    def resynced(self) -> None:
        """The replay arrived (its events are then applied one by one with ``source="cache"``)."""
        self.resync_since = None

    # -- camera events --------------------------------------------------------------------
    def event(self, sample: Any, source: str, now: Now, csc_state: str = "ENABLED",
              seq: tuple[str, int] | None = None) -> tuple[int, list[Action]]:  # fmt: skip
        """Record one camera event; finish the exposure at endOfImageTelemetry. Returns 1 if new,
        and the actions. ``csc_state``: the CSC's summary state now (headers only while ENABLED)."""
        topic = sample.get("topic") if isinstance(sample, dict) else None
        if topic not in CAMERA_EVENTS:
            return 0, []
        data = sample.get("data") if isinstance(sample.get("data"), dict) else {}
        name = data.get("imageName")
        if not isinstance(name, str) or not name:
            self.counts["events_without_image"] += 1
            log.warning("%s without an imageName ignored", topic)
            return 0, []
        if not IMAGE_NAME.fullmatch(name) or ".." in name:
            self.counts["bad_events"] += 1
            log.warning("%s with invalid imageName %r ignored", topic, name[:80])
            return 0, []
        if not isinstance(sample.get("sndStamp"), (int, float)) or isinstance(sample.get("sndStamp"), bool):
            self.counts["bad_events"] += 1
            log.warning("%s for %s has no usable private_sndStamp: ignored", topic, name)
            return 0, []
        t, note = bounded_event_time(sample, now.tai)
        if note:
            self.counts["event_times_not_believed"] += 1
            log.warning("%s of %s: %s", topic, name, note)
            sample = {**sample, "sndStamp": t, "sndStampSent": sample["sndStamp"], "timeNote": note}
        if name in self.skipped:
            return 0, []
        if topic == "startIntegration":
            dup = self.second_exposure(name, sample)
            if dup is not None:
                return 0, dup
        if name not in self.open and name not in self.done and csc_state != "ENABLED":
            reason = f"CSC {self.csc} is {csc_state}, not ENABLED"
            self.skipped[name] = reason
            self.counts["skipped"] += 1
            log.warning("%s skipped: %s", name, reason)
            return 0, [Skip(name, reason), Record({"skipped": name, "reason": reason})]
        if name in self.done:
            version, complete = self.done[name]
            if topic == "endOfImageTelemetry" and not complete and name in self.without_end:
                events = dict(self.done_events.get(name, {}))
                if topic not in events:
                    log.info("late endOfImageTelemetry for %s: reissuing its header complete", name)
                    events[topic] = sample
                    return 1, self.recompose(name, now, events=events)
            if source == "listener":
                self.counts["events_after_done"] += 1
                log.warning("%s for %s arrived after its header was written (v%d): ignored", topic, name, version)
            return 0, []
        exp = self.open.setdefault(name, OpenExposure(name))
        if topic in exp.events:
            if source == "listener":
                self.counts["duplicate_events"] += 1
                log.warning("duplicate %s for %s ignored", topic, name)
            return 0, []
        exp.events[topic] = sample
        if exp.deadline_tai is None:  # an exposure first seen by another event still gets a deadline
            exp.deadline_tai = float(sample["sndStamp"]) + self.end_deadline
            exp.deadline_wall = now.mono + self.end_deadline
        if seq is not None:
            exp.last_seq = seq
        self.bus_time = max(self.bus_time, float(sample["sndStamp"]))
        if topic == "startIntegration":
            timeout = exposure_timeout(data)
            exp.deadline_tai = sample["sndStamp"] + timeout + self.end_deadline
            exp.deadline_wall = now.mono + timeout + self.end_deadline
            log.info("exposure %s started (%.1f s)", name, usable_duration(data.get("exposureTime")) or 0.0)
        if (
            topic in PRECOMPOSE_AT
            and "startReadout" in exp.events
            and "endOfImageTelemetry" not in exp.events
            and source == "listener"
        ):
            self.precompose_due[name] = None  # run from the loop once no event is waiting
        if "endOfImageTelemetry" in exp.events:
            if "startIntegration" in exp.events:
                return 1, self.finish(exp, [])
            return 1, [FindEvents(exp, ("startIntegration",), t, "start")]
        return 1, [Journal()]

    def second_exposure(self, name: str, start: dict[str, Any]) -> list[Action] | None:
        """The actions for a startIntegration of another exposure under an imageName already used
        (a camera fault), None if it is not one: the name's header stays the first exposure's, and
        this one is reported once with the reason, never dropped silently nor written over the
        first one's header."""
        exp = self.open.get(name)
        first = exp.events.get("startIntegration") if exp is not None else None
        known = first.get("sndStampSent", first["sndStamp"]) if first else self.start_stamps.get(name)
        stamp = start.get("sndStampSent", start["sndStamp"])
        if known is None or abs(float(stamp) - float(known)) < 1e-6:
            return None  # the first exposure's own start, delivered again
        if (name, stamp) in self.duplicates:
            return []
        self.duplicates.add((name, stamp))
        self.counts["duplicate_image_names"] += 1
        reason = (
            f"imageName used again by a second exposure started at {astro.tai_iso(start['sndStamp'])} TAI "
            f"(the first started at {astro.tai_iso(float(known))} TAI): no header written for the second one"
        )
        return self.skip(name, reason, float(stamp), duplicate=True)

    def skip(self, name: str, reason: str, t: float | None, duplicate: bool = False) -> list[Action]:
        """An exposure without a header of its own: published on ``ctl.skipped`` and kept in the
        history (``hs-catchup list``); later events of the name are ignored (a reused name's are not)."""
        log.warning("%s: no header: %s", name, reason)
        if not duplicate:
            self.skipped[name] = reason
        entry: dict[str, Any] = {"duplicate" if duplicate else "skipped": name, "reason": reason}
        if t is not None:
            entry["t"] = t
        return [Skip(name, reason, duplicate), Record(entry)]

    # -- cache answers --------------------------------------------------------------------
    def found(self, ask: FindEvents, replies: dict[str, list[Any] | None], now: Now) -> list[Action]:
        """The cache's ``range`` answers to a :class:`FindEvents` (per topic its samples, None when
        the cache could not be asked); the exposure moves on."""
        exp = ask.exp
        unavailable = False
        for topic in ask.topics:
            samples = replies.get(topic)
            if samples is None:
                unavailable = True
                continue
            got = pick_event(samples, exp.image_name, now.tai)
            if got is not None:
                exp.events[topic] = got
        if ask.then == "start":
            if "startIntegration" in exp.events:
                return self.finish(exp, [])
            # events re-delivered after a listener restart come topic by topic: give the start a moment
            exp.grace_wall = now.mono + END_GRACE
            return [Journal()]
        if ask.then == "set_aside":
            if set(exp.events) != {"endOfImageTelemetry"} or unavailable:
                return self.finish(exp, [])  # the image may exist: it gets its header
            self.counts["set_aside"] += 1
            self.open.pop(exp.image_name, None)
            return self.skip(exp.image_name, NEVER_STARTED, float(exp.events["endOfImageTelemetry"]["sndStamp"])) + [Journal()]
        if ask.then == "find":
            return []
        if ask.then == "recompose":
            if not exp.events:
                self.recompose_errors[exp.image_name] = "no camera event of this image in the journal or the cache"
                return []
            return [self.compose_action(exp, [], ask.version)]
        return [self.compose_action(exp, ask.reasons, ask.version)]

    def finish(self, exp: OpenExposure, reasons: list[str], version: int | None = None) -> list[Action]:
        """Compose, send and journal one header (real time, late reissue and catch-up alike):
        events this process missed are looked up in the cache first."""
        points = collection_points(exp.events)
        missing = tuple(t for t in BEFORE_END if t not in exp.events)
        if missing:
            return [FindEvents(exp, missing, max(points.values()) if points else None, "finish", reasons, version)]
        return [self.compose_action(exp, reasons, version)]

    def compose_action(self, exp: OpenExposure, reasons: list[str], version: int | None) -> Compose:
        """What to collect and compose, with the reasons the exposure's own events give."""
        points = collection_points(exp.events)
        if "endOfImageTelemetry" not in exp.events and not reasons:
            reasons = ["endOfImageTelemetry not received"]
        if "startIntegration" not in exp.events:
            reasons = reasons + ["startIntegration not received"]
        reasons = reasons + [f"{t}: {ev['timeNote']}" for t, ev in exp.events.items() if ev.get("timeNote")]
        if version is None:
            version = int(self.done.get(exp.image_name, [0])[0]) + 1
        after = exp.last_seq if exp.last_seq[0] else None
        known = {p: s for p, s in exp.early.items() if exp.early_points.get(p) == points.get(p)}
        return Compose(exp, points, reasons, version, after, known)

    def composed(self, job: Compose, complete: bool, body: bytes, now: Now) -> list[Action]:
        """A header was composed: send it, remember it, journal it and close the exposure."""
        exp, version, name = job.exp, job.version, job.exp.image_name
        self.done.pop(name, None)
        self.done[name] = [version, complete]
        start = exp.events.get("startIntegration")
        if start:
            self.start_stamps[name] = float(start.get("sndStampSent", start["sndStamp"]))
        # only a header written without its end is reissued when the end comes (a header incomplete
        # for another reason is not made worse by a replayed end after a restart)
        noend = "endOfImageTelemetry" not in exp.events
        (self.without_end.add if noend else self.without_end.discard)(name)
        entry = {"done": name, "v": version, "complete": complete,
                 **({"t": self.start_stamps[name]} if start else {}), **({"noend": True} if noend else {})}  # fmt: skip
        self.done_events[name] = exp.events
        self.unacked[name] = (now.mono, version, body)
        while len(self.done_events) > RECENT_HEADERS:
            self.done_events.pop(next(iter(self.done_events)))
        self.open.pop(name, None)
        self.counts["headers" if complete else "headers_incomplete"] += 1
        return [Send(name, version, body), Record(entry), Journal()]

    def recompose(self, name: str, now: Now, events: dict[str, Any] | None = None,
                  same_version: bool = False) -> list[Action]:  # fmt: skip
        """Compose an image again from its events (journal or cache): late end, restart, catch-up.
        Its outcome: ``done[name]``, or the reason in ``recompose_errors[name]``."""
        exp = OpenExposure(name, dict(events or self.done_events.get(name, {})))
        self.recompose_errors.pop(name, None)
        prev = int(self.done.get(name, [0])[0])
        version = prev if (same_version and prev) else prev + 1
        points = collection_points(exp.events)
        t1 = max(points.values()) if points else None
        missing = tuple(t for t in BEFORE_END if t not in exp.events)
        actions: list[Action] = [FindEvents(exp, missing, t1, "find")] if missing else []
        if "endOfImageTelemetry" not in exp.events:
            actions.append(FindEvents(exp, ("endOfImageTelemetry",), None, "find"))
        return actions + [FindEvents(exp, (), None, "recompose", version=version)]

    def abandon(self, name: str) -> list[Action]:
        """An exposure whose header could not be written at its deadline: set aside with the
        reason rather than retried every second."""
        self.open.pop(name, None)
        return self.skip(name, "its header could not be written (see the composer log)", None) + [Journal()]

    # -- publisher ------------------------------------------------------------------------
    def acked(self, name: str, version: int) -> list[Action]:
        """The publisher announced (or set aside) a header: no longer resent."""
        pending = self.unacked.get(name)
        if pending and pending[1] <= version:
            del self.unacked[name]
            return [Journal()]
        return []

    # -- clock ----------------------------------------------------------------------------
    def deadlines(self, now: Now) -> list[tuple[str, list[Action]]]:
        """Per exposure due now, its actions: the end's grace is over, or the end is late beyond
        the deadline on either the bus's event time or the monotonic clock."""
        if self.resync_since is not None and now.mono - self.resync_since < RESYNC_HOLD:
            return []  # events this process missed are still to come from the cache
        out: list[tuple[str, list[Action]]] = []
        for exp in list(self.open.values()):
            if exp.grace_wall is not None and now.mono > exp.grace_wall:
                if "startIntegration" in exp.events:
                    out.append((exp.image_name, self.finish(exp, [])))
                else:
                    missing = tuple(t for t in CAMERA_EVENTS if t not in exp.events)
                    t_end = float(exp.events["endOfImageTelemetry"]["sndStamp"])
                    out.append((exp.image_name, [FindEvents(exp, missing, t_end, "set_aside")]))
                continue
            late_bus = exp.deadline_tai is not None and self.bus_time > exp.deadline_tai
            late_wall = exp.deadline_wall is not None and now.mono > exp.deadline_wall
            if (late_bus or late_wall) and "endOfImageTelemetry" not in exp.events:
                log.warning("%s: endOfImageTelemetry is late beyond the deadline: writing incomplete", exp.image_name)
                self.counts["late"] += 1
                out.append((exp.image_name, self.finish(exp, ["endOfImageTelemetry late beyond the deadline"])))
        return out

    def resends(self, now: Now) -> list[Action]:
        """Headers the publisher has not acknowledged within ``ACK_TIMEOUT``: sent again (it is idempotent)."""
        out: list[Action] = []
        for name, (sent, version, body) in list(self.unacked.items()):
            if now.mono - sent > ACK_TIMEOUT:
                self.counts["resent"] += 1
                log.warning("%s v%s not acknowledged by the publisher: sent again", name, version)
                self.unacked[name] = (now.mono, version, body)
                out.append(Send(name, version, body, resend=True))
        return out

    def held(self, name: str) -> bool:
        """Whether an exposure's provisional composition waits: while an exposure that began its
        readout earlier still awaits its endOfImageTelemetry. That end is due within the readout
        (seconds, or a few hundred ms at a bench's fast clock) and must never queue behind tens of
        ms of work that only saves time later; it is composed first, then this one's head start."""
        exp = self.open.get(name)
        if exp is None or "startReadout" not in exp.events:
            return False
        mine = exp.events["startReadout"].get("sndStamp")
        for other in self.open.values():
            if other is exp or "endOfImageTelemetry" in other.events or "startReadout" not in other.events:
                continue
            theirs = other.events["startReadout"].get("sndStamp")
            if isinstance(theirs, (int, float)) and isinstance(mine, (int, float)) and theirs < mine:
                return True
        return False

    def precompose_ready(self) -> bool:
        """A provisional composition is due and not held (see :meth:`held`)."""
        return any(not self.held(name) for name in self.precompose_due)

    def next_precompose(self) -> OpenExposure | None:
        """The next exposure due a provisional composition and not held (None if there is none, or
        if it no longer needs one)."""
        for name in self.precompose_due:
            if not self.held(name):
                break
        else:
            return None
        del self.precompose_due[name]
        exp = self.open.get(name)
        return exp if exp is not None and "endOfImageTelemetry" not in exp.events else None

    def keep_early(self, exp: OpenExposure, snapshots: dict[str, Any], points: dict[str, float]) -> None:
        """The start and readout snapshots of a provisional composition, final once the cache has
        caught up: the real composition asks only for what is new."""
        exp.early = {p: s for p, s in snapshots.items() if p in ("start", "readout")}
        exp.early_points = {p: points[p] for p in exp.early}
