"""hs-cache: the time-indexed store of every SAL sample the instance listens to.

SUBscribes to the listener; per (topic, salIndex) keeps a history ordered by the sample's own TAI
time (private_sndStamp), bounded by age and count, every sample also on disk
(:mod:`procs.cache_segments`) for restarts and for what does not fit the memory budget. Answers on a ROUTER socket:
``collect`` (snapshots as of several TAI times plus every sample in windows, after catching up with
a given listener sequence number), ``range``, ``latest`` and ``status``. Event time, never arrival
time: late or replayed samples land in their place in the history.
"""

from __future__ import annotations

import base64
import bisect
import logging
import time
from array import array
from functools import lru_cache
from pathlib import Path
from typing import Any

import zmq

from procs.common import Counters, GcPacer, Stop, drain, run_process
from procs.cache_segments import NO_REF, OFFSET_BITS, Segments
from protocols import messages, sal, salrecord
from protocols.config import InstanceConfig
from protocols.envelope import (
    Envelope,
    EnvelopeError,
    GapTracker,
    Sender,
    check_frames,
    decode,
    loads_bounded,
    resumes,
    sender_id,
    split_identity,
)

log = logging.getLogger("cache")
BEHIND = b"ctl.behind."  # the listener's notice of a camera event published with topics behind it
REFILL_AFTER = 5.0  # s after an outage closes before samples inside it count as a replay


@lru_cache(maxsize=2048)
def _decoded(component: str, topic: str, raw: bytes) -> dict[str, Any]:
    """A stored record decoded; memoized, since each snapshot is read at several collection points
    and by the provisional composition (bytes keep their hash, so a lookup costs one dict probe)."""
    return salrecord.decode(component, topic, raw)


class History:
    """Samples of one topic key, ordered by TAI time, bounded by age and count, and in memory by bytes.

    Samples are kept as the SAL records the listener sent (CDR bytes behind a small header) and
    decoded only when asked for. Past ``max_bytes`` the oldest samples that are on disk
    (:mod:`procs.cache_segments`) are released from memory, their reference kept: reading them
    back costs a ``pread``. Without a disk, or while it refuses writes, the oldest samples are
    dropped instead once the budget (twice it with a disk) is exceeded.

    Times, references and lengths are packed arrays (20 bytes a sample). The oldest samples are
    dropped by moving ``start`` (their slots released) and the arrays compacted once that dead
    prefix is as long as what is kept: a full history drops one sample per sample added, and
    deleting from the front of a 20,000-entry list each time cost more than the rest of storing a
    sample.
    """

    __slots__ = ("component", "topic", "disk", "times", "samples", "refs", "lengths", "nbytes", "start", "hot")

    def __init__(self, component: str, topic: str, disk: Segments | None = None) -> None:
        self.component = component
        self.topic = topic
        self.disk = disk
        self.times = array("d")
        self.samples: list[bytes | None] = []  # None: on disk only (refs) or dropped (before ``start``)
        self.refs = array("q")  # where each record is in the segments (NO_REF: not written there)
        self.lengths = array("I")
        self.nbytes = 0  # bytes of the records held in memory
        self.start = 0  # index of the oldest sample kept
        self.hot = 0  # samples before this index are on disk only

    def __len__(self) -> int:
        return len(self.times) - self.start

    def add(self, t: float, raw: bytes, max_samples: int, max_age: float, max_bytes: float, ref: int = NO_REF) -> None:
        times, start = self.times, self.start
        if len(times) == start or t >= times[-1]:
            times.append(t)
            self.samples.append(raw)
            self.refs.append(ref)
            self.lengths.append(len(raw))
        else:
            i = bisect.bisect_right(times, t, start)
            times.insert(i, t)
            self.samples.insert(i, raw)
            self.refs.insert(i, ref)
            self.lengths.insert(i, len(raw))
            self.hot = min(self.hot, i)
        self.nbytes += len(raw)
        if self.nbytes > max_bytes and self.disk is not None:
            self._release(max_bytes)
            max_bytes *= 2
        if len(times) - start > max_samples or times[start] < times[-1] - max_age or self.nbytes > max_bytes:
            self._drop(max_samples, max_age, max_bytes)

    def _release(self, max_bytes: float) -> None:
        """Release from memory the oldest samples the disk holds, down to ``max_bytes``."""
        disk, samples, refs, i, last = self.disk, self.samples, self.refs, max(self.hot, self.start), len(self.times) - 1
        while self.nbytes > max_bytes and i < last:
            raw = samples[i]
            if raw is not None:
                if not disk.readable(refs[i], len(raw)):  # type: ignore[union-attr]
                    break
                samples[i] = None
                self.nbytes -= len(raw)
            i += 1
        self.hot = i

    def _drop(self, max_samples: int, max_age: float, max_bytes: float) -> None:
        """Drop the oldest samples past the count, the age or the memory budget."""
        times, samples, start, end = self.times, self.samples, self.start, len(self.times)

        def held(lo: int, hi: int) -> int:
            return sum(len(r) for r in samples[lo:hi] if r is not None)

        keep_from = max(end - max_samples, bisect.bisect_left(times, times[-1] - max_age, start))
        while self.nbytes - held(start, keep_from) > max_bytes and keep_from < end - 1:
            keep_from += max(1, (end - keep_from) // 20)
        if keep_from > start:
            self.nbytes -= held(start, keep_from)
            samples[start:keep_from] = [None] * (keep_from - start)
            self.start = keep_from
            self.hot = max(self.hot, keep_from)
            if keep_from >= end - keep_from:
                self._compact()

    def _compact(self) -> None:
        k = self.start
        for seq in (self.times, self.samples, self.refs, self.lengths):
            del seq[:k]
        self.start = 0
        self.hot = max(0, self.hot - k)

    def forget_before(self, segment: int) -> None:
        """Drop the oldest samples held only in segments before ``segment`` (deleted from disk)."""
        i, end = self.start, len(self.times)
        while i < end and self.samples[i] is None and self.refs[i] >> OFFSET_BITS < segment:
            i += 1
        if i > self.start:
            self.start = i
            self.hot = max(self.hot, i)
            if i >= end - i:
                self._compact()

    def raw(self, i: int) -> bytes | None:
        """The record at index ``i``, from memory or from disk."""
        raw = self.samples[i]
        if raw is None and self.disk is not None:
            raw = self.disk.read(self.refs[i], self.lengths[i])
        return raw

    def decode(self, raw: bytes | None) -> dict[str, Any] | None:
        """The sample, or None when its bytes cannot be had or do not decode (it then counts as missing)."""
        if raw is None:
            return None
        try:
            return _decoded(self.component, self.topic, raw)
        except salrecord.RecordError as exc:
            log.warning("stored %s.%s sample not decodable: %s", self.component, self.topic, exc)
            return None

    def as_of(self, t: float) -> dict[str, Any] | None:
        i = bisect.bisect_right(self.times, t, self.start)
        return self.decode(self.raw(i - 1)) if i > self.start else None

    def between(self, t0: float, t1: float) -> list[dict[str, Any]]:
        lo, hi = bisect.bisect_left(self.times, t0, self.start), bisect.bisect_right(self.times, t1, self.start)
        return [d for d in map(self.decode, map(self.raw, range(lo, hi))) if d is not None]

    def latest(self) -> dict[str, Any] | None:
        return self.decode(self.raw(len(self.times) - 1)) if len(self) else None


class Store:
    """All histories, keyed ``Component.topic:salIndex``; with ``disk``, every sample stored is
    also appended to the cache's segments, and the oldest are read back from there."""

    def __init__(self, max_samples: int, max_age: float, max_topic_bytes: float = 64e6, disk: Segments | None = None):
        self.histories: dict[str, History] = {}
        self.max_samples = max_samples
        self.max_age = max_age
        self.max_topic_bytes = max_topic_bytes
        self.disk = disk
        self.keys: dict[tuple[bytes, int], str] = {}  # (topic frame, salIndex) -> topic key

    def key_of(self, topic_frame: bytes, sal_index: int) -> str:
        key = self.keys.get((topic_frame, sal_index))
        if key is None:
            component, topic = salrecord.split_topic(topic_frame.decode("ascii"))
            sal.get_topic(component, topic)  # a topic the SAL interface does not define is refused
            key = messages.topic_key(component, topic, sal_index)
            self.histories[key] = History(component, topic, self.disk)
            self.keys[(topic_frame, sal_index)] = key
        return key

    def add(self, topic_frame: bytes, raw: bytes, ref: int | None = None) -> tuple[str, float]:
        """Store one SAL record under its topic; returns its key and TAI time. ``ref``: where the
        record already is on disk (a restart's replay); else it is appended there."""
        sal_index, t, rcv, _src = salrecord.peek(raw)
        if t is None or t <= 0:
            raise ValueError(f"sample has no usable private_sndStamp: {t!r}")
        if rcv > 0 and t > rcv + salrecord.FUTURE_SLACK:  # would empty the topic's history (its horizon)
            raise ValueError(f"sample stamped {t - rcv:.0f} s after its reception refused (private_sndStamp {t!r})")
        key = self.key_of(topic_frame, sal_index)
        if ref is None:
            ref = self.disk.add(topic_frame, raw) if self.disk is not None else NO_REF
        self.histories[key].add(t, raw, self.max_samples, self.max_age, self.max_topic_bytes, ref)
        return key, t

    def forget_before(self, segment: int) -> None:
        """Segments before ``segment`` were deleted: what only they held is gone."""
        for h in self.histories.values():
            h.forget_before(segment)

    def as_of(self, key: str, t: float) -> dict[str, Any] | None:
        h = self.histories.get(key)
        return h.as_of(t) if h else None

    def between(self, key: str, t0: float, t1: float) -> list[dict[str, Any]]:
        h = self.histories.get(key)
        return h.between(t0, t1) if h else []

    def collect(self, req: messages.CollectRequest) -> dict[str, Any]:
        """Snapshots at each point and samples in each window; with ``fields`` (topic key -> field
        names) only those fields of each sample's data are sent."""
        fields = {k: frozenset(v) for k, v in req.fields.items()}

        def trim(key: str, s: dict[str, Any] | None) -> dict[str, Any] | None:
            keep = fields.get(key)
            if s is None or keep is None:
                return s
            return dict(s, data={f: v for f, v in s["data"].items() if f in keep})

        snaps = {
            point: {key: trim(key, self.as_of(key, req.points[point])) for key in keys}
            for point, keys in req.topics.items()
            if point in req.points
        }
        windows = {w.key: [trim(w.key, s) for s in self.between(w.key, w.t0, w.t1)] for w in req.windows}
        return {"snapshots": snaps, "windows": windows}


class CacheServer:
    def __init__(self, cfg: InstanceConfig):
        self.cfg = cfg
        self.disk = Segments(Path(cfg.state_dir) / cfg.instrument / "cache", cfg.cache_max_age, cfg.cache_max_disk_mb * 1e6)
        self.store = Store(cfg.cache_max_samples, cfg.cache_max_age, cfg.cache_max_topic_mb * 1e6, self.disk)
        self.outages: list[list[float]] = []  # [t0, t1] TAI spans the bus was not observed
        self.open_outage: float | None = None  # start of an outage whose end is not known yet
        self.outage_closed = 0.0  # when the last outage's end was seen (the restart's own burst is not a refill)
        self.last_sample_time = 0.0
        self.counts = Counters()
        self.gaps = GapTracker()
        self.applied: dict[str, int] = {}  # listener sender -> last applied seq
        self.parked: list[tuple[float, list[bytes], messages.Request]] = []
        ctx = zmq.Context.instance()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 200000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"sal.")
        self.sub.setsockopt(zmq.SUBSCRIBE, BEHIND)
        self.sub.connect(cfg.endpoints.listener_pub)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(cfg.endpoints.cache_router)
        self.sender = Sender(sender_id("cache", cfg.instrument))
        self.listener = messages.CacheClient(cfg.endpoints.listener_router, self.sender, timeout_s=3.0, peer="listener")
        self.restore()

    def restore(self) -> None:
        t0 = time.monotonic()
        n, meta = self.disk.load(self.store)
        self.applied = {k: int(v) for k, v in meta.get("applied", {}).items()}
        self.outages = meta.get("outages", [])
        self.last_sample_time = float(meta.get("last_sample_time", 0.0))
        if self.last_sample_time:
            for sender, seq in self.applied.items():  # oldest first: the latest is the listener now
                self.gaps.resume(sender, seq)
        log.info("restored %d samples from disk in %.2f s (%d outage span(s) recorded)", n, time.monotonic() - t0, len(self.outages))

    def meta(self) -> dict[str, Any]:
        return {"applied": dict(list(self.applied.items())[-4:]), "outages": self.outages[-100:], "last_sample_time": self.last_sample_time}

    def replay(self, sender: str, since: int) -> bool:
        """Ask the listener for the messages after ``since``; False when it cannot give them all."""
        try:
            body = self.listener.ask(messages.ReplayRequest(since), messages.ReplayReply)
        except messages.CacheUnavailable as exc:
            log.warning("replay not possible: %s", exc)
            return False
        if body.sender != sender:
            return False
        for topic, seq, payload in body.messages:
            if seq > self.applied.get(sender, 0):
                try:
                    self.apply(topic.encode(), base64.b64decode(payload), sender, seq)
                except (ValueError, KeyError) as exc:
                    self.counts["bad_messages"] += 1
                    log.warning("bad replayed message ignored: %s", exc)
        self.counts["replayed"] += len(body.messages)
        return body.oldest <= since + 1

    def apply(self, topic_frame: bytes, payload: bytes, sender: str, seq: int) -> None:
        """One listener message: a SAL record or a batch of them (:func:`protocols.salrecord.records`),
        or a :class:`~protocols.messages.BusBehind` notice. A batch that does not parse is refused
        whole (ValueError); a record that cannot be stored is counted and logged, and the rest of
        its batch is stored."""
        if topic_frame.startswith(BEHIND):
            note = messages.BusBehind.decode(loads_bounded(payload, "ctl.behind payload"))
            self.applied[sender] = seq
            self.behind(note)
            return
        recs = salrecord.records(payload)
        self.applied[sender] = seq
        for raw in recs:
            try:
                key, t = self.store.add(topic_frame, raw)
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                if len(recs) == 1:
                    raise
                self.counts["bad_records"] += 1
                log.warning("bad record in a batch from the listener ignored: %s", exc)
                continue
            self.counts["samples"] += 1
            if self.outages or self.open_outage is not None:
                self.observed(key, t)
            elif t > self.last_sample_time:
                self.last_sample_time = t

    def behind(self, note: messages.BusBehind) -> None:
        """The listener published a camera event while topics were behind it: the span is recorded
        as one the bus was not observed in (a header reading it is INCOMPLETE), and cleared, as an
        outage is, by samples inside it arriving later than REFILL_AFTER."""
        self.counts["behind_spans"] += 1
        self.outages.append([note.t0, note.t1])
        self.outage_closed = time.monotonic()
        self.flush()
        log.warning("camera event published with topics behind it: %.3f .. %.3f TAI recorded as not observed (%s)",
                    note.t0, note.t1, ", ".join(note.topics[:5]))  # fmt: skip

    def observed(self, key: str, t: float) -> None:
        """A sample stamped ``t`` was stored while an outage is recorded or open: a replayed sample
        inside the last outage clears it, the first telemetry after an open one closes it."""
        if (
            self.outages
            and self.outages[-1][0] < t < self.outages[-1][1]
            and time.monotonic() - self.outage_closed > REFILL_AFTER
            and self.is_telemetry(key)
        ):
            self.counts["outage_refilled"] += 1
            log.info("samples inside the outage %s arrive (replayed): outage cleared", self.outages[-1])
            self.outages.pop()
        if self.open_outage is not None and self.is_telemetry(key) and t > self.open_outage:
            self.outages.append([self.open_outage, t])
            self.outage_closed = time.monotonic()
            self.flush()  # what the bus missed must survive this process too
            log.warning("bus not observed between %.3f and %.3f TAI", self.open_outage, t)
            self.open_outage = None
        if self.open_outage is None and t > self.last_sample_time:
            self.last_sample_time = t

    def is_telemetry(self, key: str) -> bool:
        h = self.store.histories[key]
        return sal.get_topic(h.component, h.topic).kind == "telemetry"

    def on_sample(self, frames: list[bytes]) -> None:
        """One listener message: the envelope is checked, the record stored as it came."""
        try:
            check_frames(frames)
            env = Envelope.decode(frames[1])
            st = self.gaps.check(env)
            if st.duplicate:
                return
            if (st.restarted or (env.sender not in self.applied and self.applied)) and resumes(env.sender):
                self.counts["listener_resumes"] += 1
                log.info("listener restarted (%s), resuming from its committed offsets: no outage", env.sender)
                self.applied[env.sender] = env.seq - 1
            elif st.restarted or (env.sender not in self.applied and self.applied):
                self.counts["listener_restarts"] += 1
                log.warning("listener restarted (%s): what it missed is an outage", env.sender)
                if self.last_sample_time:
                    self.open_outage = self.last_sample_time
                self.applied[env.sender] = env.seq - 1
                self.flush()
            elif st.gap:
                self.counts["gaps"] += st.gap
                if not self.replay(env.sender, env.seq - st.gap - 1):
                    log.warning("gap of %d message(s) from %s not recoverable: outage recorded", st.gap, env.sender)
                    self.open_outage = self.last_sample_time
            self.apply(frames[0], frames[2], env.sender, env.seq)
        except (EnvelopeError, ValueError, KeyError, UnicodeDecodeError) as exc:
            self.counts["bad_messages"] += 1
            log.warning("bad message from the listener ignored: %s", exc)

    def caught_up(self, req: messages.Request) -> bool:
        if req.after is None:
            return True
        return self.applied.get(req.after.sender, 0) >= req.after.seq

    def answer(self, ident: list[bytes], req: messages.Request, late: bool = False) -> None:
        reply: messages.Reply
        if isinstance(req, messages.CollectRequest):
            found = self.store.collect(req)
            reply = messages.CollectReply(found["snapshots"], found["windows"], caught_up=not late)
            pts = list(req.points.values())
            if pts:
                lo, hi = min(pts) - self.cfg.telemetry_max_age, max(pts)
                spans = self.outages + ([[self.open_outage, 1e12]] if self.open_outage is not None else [])
                reply.outages = [o for o in spans if o[0] < hi and o[1] > lo]
        elif isinstance(req, messages.RangeRequest):
            reply = messages.RangeReply(self.store.between(req.key, req.t0, req.t1))
        elif isinstance(req, messages.LatestRequest):
            reply = messages.LatestReply({k: (self.store.histories[k].latest() if k in self.store.histories else None) for k in req.keys})
        else:
            reply = messages.CacheStatus(self.outages, self.counts.as_dict(), {k: len(h) for k, h in self.store.histories.items()})
        self.router.send_multipart(ident + self.sender.frames(reply.topic(), reply.encode()))

    def refuse(self, ident: list[bytes], error: str, topic: str = "ctl.reply.error") -> None:
        """Answer a request that cannot be served with the reason (counted and logged by the caller)."""
        self.router.send_multipart(ident + self.sender.frames(topic, messages.ErrorReply(error).encode()))

    def on_request(self, frames: list[bytes]) -> None:
        ident, rest = split_identity(frames)
        try:
            payload = decode(rest).payload
            if not isinstance(payload, dict):
                raise EnvelopeError("request payload is not an object")
        except EnvelopeError as exc:
            self.counts["bad_requests"] += 1
            log.warning("request rejected: %s", exc)
            self.refuse(ident, str(exc))
            return
        try:
            req = messages.decode_request(payload, messages.CACHE_REQUESTS)
        except messages.UnknownOp as exc:
            self.counts["bad_requests"] += 1
            log.warning("%s", exc)
            self.refuse(ident, str(exc), f"ctl.reply.{payload.get('op')}")
            return
        except EnvelopeError as exc:
            self.counts["bad_requests"] += 1
            log.warning("request rejected: %s", exc)
            self.refuse(ident, f"bad request: {exc}")
            return
        try:
            if self.caught_up(req):
                self.answer(ident, req)
            else:
                self.parked.append((time.monotonic() + self.cfg.collect_wait, ident, req))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            self.counts["bad_requests"] += 1
            log.warning("request rejected: %s", exc)
            self.refuse(ident, f"bad request: {exc}")

    def release_parked(self) -> None:
        now = time.monotonic()
        keep = []
        for deadline, ident, req in self.parked:
            try:
                if self.caught_up(req):
                    self.answer(ident, req)
                elif now >= deadline:
                    self.counts["late_answers"] += 1
                    self.answer(ident, req, late=True)
                else:
                    keep.append((deadline, ident, req))
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                self.counts["bad_requests"] += 1
                log.warning("request rejected: %s", exc)
                self.refuse(ident, f"bad request: {exc}")
        self.parked = keep

    def run(self, stop: Stop) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        log.info("cache up: SUB %s, ROUTER %s", self.cfg.endpoints.listener_pub, self.cfg.endpoints.cache_router)
        last_flush = time.monotonic()
        pacer = GcPacer()  # the restored history is frozen: never scanned again
        while not stop.requested:
            if time.monotonic() - last_flush >= 1.0:
                last_flush = time.monotonic()
                self.flush()
            events = dict(poller.poll(50))
            pacer.step(quiet=not events)
            if self.sub in events:
                self.take_samples()
            if self.router in events:
                drain(self.router, self.on_request)
            if self.parked:
                self.release_parked()
        self.flush()


    def take_samples(self, budget_s: float = 0.01) -> None:
        """Store what the listener sent, for at most ``budget_s`` (then requests are answered: a
        burst of telemetry never keeps a header's collect waiting behind it)."""
        end = time.monotonic() + budget_s
        recv, handle = self.sub.recv_multipart, self.on_sample
        while True:
            for _ in range(64):
                try:
                    handle(recv(zmq.NOBLOCK))
                except zmq.Again:
                    return
            if time.monotonic() > end:
                return

    def flush(self) -> None:
        oldest = self.disk.oldest
        try:
            self.disk.flush(self.meta())
        except OSError as exc:
            self.counts["persist_errors"] += 1
            log.error("cannot persist the cache: %s", exc)
        if self.disk.oldest != oldest:  # segments were pruned: the samples only they held are gone
            self.store.forget_before(self.disk.oldest)


def main(argv: list[str] | None = None) -> None:
    run_process("hs-cache", __doc__, lambda cfg: CacheServer(cfg).run, argv)


if __name__ == "__main__":
    main()
