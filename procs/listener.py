"""hs-listener: joins the DDS domain and republishes every SAL sample the instance needs on ZeroMQ.

Subscribes to exactly the topics of the instrument's keyword map plus the camera triggers, and
publishes each sample unchanged on a PUB socket, topic ``sal.<Component>.<topic>``: its serialized
bytes as a SAL record (:mod:`protocols.salrecord`, with salIndex, private_sndStamp, the time it was
taken and its DDS source timestamp in a fixed header). Bus access sits behind :class:`DdsBus`.

Samples are taken from each reader in takes of up to :data:`TAKE_N`; the samples of one take of a
topic go out as one message, a batch of records (:func:`protocols.salrecord.encode_batch`), so that
a busy topic costs one envelope, one send and one ring entry per take rather than per sample. Camera
topics (what the composer subscribes to) always go one sample per message: the composer acts on each
event as it comes. What was published is kept in a :class:`ReplayRing` for a cache that missed it.

On Kafka (``bus: kafka``), :class:`KafkaSource` reads the same topics in the stable consumer group
``hs-listener-<instrument>``, turns each Avro value into the same SAL record (format 1: the sample's
fields encoded as the CDR the DDS bus would have carried, so cache and composer are unchanged) and
commits the offsets once the records are published: a listener killed and restarted resumes at its
first unpublished record, and says so (its sender id ends in ``+resume``) so the cache records no
outage. Bad records (no magic byte, unknown schema id, truncated body, a schema lacking a field the
keyword map reads) are counted and logged with topic and offset by the reader, never fatal. A
camera event is held until the other topics are read up to it (:meth:`KafkaSource.catch_up`); one
published while some are still behind is preceded by ``ctl.behind.<instrument>``
(:class:`protocols.messages.BusBehind`), so that the cache records the span and the header says its
telemetry may be missing.
"""

from __future__ import annotations

import base64
import ctypes
import logging
import os
import time
from collections import deque
from typing import Any, Iterator

import zmq

from procs.common import Counters, GcPacer, Stop, run_process
from protocols import sal, salrecord
from protocols.config import InstanceConfig, load_keyword_map
from protocols.envelope import RESUMING, EnvelopeError, Sender, decode, encode_payload, sender_id, split_identity, tai_now
from protocols.messages import BusBehind, ErrorReply, ProcessStatus, RefillReply, RefillRequest, ReplayReply, ReplayRequest, decode_request
from protocols.timescale import utc_from_tai

log = logging.getLogger("listener")
REPLAY_BYTES = 8e6  # payload bytes the replay ring keeps (LATISS: 80 s of 4.9 kB ATPtg.mountPositions at 20 Hz, a cache restart takes seconds)
TAKE_N = 4096  # samples taken from one reader at a time (one batch message at most)
GATHER_S = 0.001  # after a busy poll, other topics' samples gather this long (camera events never wait)


def needed_topics(cfg: InstanceConfig) -> list[tuple[str, str]]:
    """(component, topic) pairs the instance listens to: keyword map sources and camera triggers."""
    kmap = load_keyword_map(cfg)
    out = {(cfg.camera, t) for t in cfg.trigger_topics}
    out |= {(k.component, k.topic) for k in kmap.keywords}
    return sorted(out)


def sample_record(cdr: bytes, source_ns: int | None, decode_cls: Any, taken: float | None = None) -> bytes:
    """One sample's SAL record (:mod:`protocols.salrecord`): its CDR bytes, unchanged, behind a
    header with salIndex and private_sndStamp, read without decoding the sample; ``taken`` is the
    TAI time it was taken (now when not given)."""
    peeked = salrecord.index_and_stamp(cdr)
    if peeked is None:  # an encoding read only by the generic deserializer
        sample = decode_cls.deserialize(cdr)
        peeked = (sample.salIndex, sample.private_sndStamp)
    return salrecord.encode(cdr, peeked[0], peeked[1], tai_now() if taken is None else taken, source_ns)


class DdsBus:
    """Readers for a set of SAL topics on one DDS domain, drained through one WaitSet.

    Samples are taken as their serialized bytes: the listener never decodes a sample, it forwards it.
    The ``urgent`` topics (the camera's events) come last in every poll, after the samples that
    reached the listener before them, and have a waitset of their own: :meth:`pause` lets other
    topics' samples gather into larger takes while never holding back an urgent one.
    """

    def __init__(self, domain: int, topics: list[tuple[str, str]], urgent: frozenset[tuple[str, str]] = frozenset()):
        sal.ensure_loopback_dds()
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self.dp = DomainParticipant(domain)
        self.waitset = WaitSet(self.dp)
        self.readers: list[tuple[str, str, Any, bytes, Any]] = []
        self.mask = SampleState.Any | ViewState.Any | InstanceState.Any
        self.by_attach: dict[int, int] = {}  # a condition's waitset attach value -> its reader's index
        self.urgent_waitset = WaitSet(self.dp)
        for component, name in topics:
            st = sal.get_topic(component, name)
            cls = sal.idl_class(component, name)
            topic = Topic(self.dp, st.dds_name, cls, qos=sal.qos_for(st.kind))
            reader = DataReader(self.dp, topic, qos=sal.reader_qos(st.kind))
            cond = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
            self.waitset.attach(cond)
            self.by_attach[ctypes.addressof(self.waitset.attached[-1][1])] = len(self.readers)
            self.readers.append((component, name, reader, f"sal.{component}.{name}".encode(), cls))
            if (component, name) in urgent:
                self.urgent_waitset.attach(ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any))
        self.triggered = (ctypes.c_void_p * len(self.readers))()
        # taken in this order: urgent topics after the others
        self.order = sorted(range(len(self.readers)), key=lambda i: self.readers[i][:2] in urgent)
        self.rank = {i: r for r, i in enumerate(self.order)}

    def pause(self, seconds: float) -> None:
        """Wait up to ``seconds`` unless an urgent topic has (or gets) a sample: between two polls,
        so that a busy topic's samples are taken by the hundred instead of one per wake-up."""
        if self.urgent_waitset.attached:
            self.urgent_waitset.wait(int(seconds * 1e9))
        else:
            time.sleep(seconds)

    def ready(self, timeout_s: float) -> list[tuple[str, str, Any, bytes, Any]]:
        """The readers whose condition triggered within ``timeout_s``: Cyclone's waitset names them
        (dds_waitset_wait's attach values), so a wake-up for one topic takes from that topic alone
        rather than from all ~30; every reader when the binding does not expose that call."""
        ws = self.waitset
        try:
            n = ws._waitset_wait(ws._ref, self.triggered, len(self.readers), int(timeout_s * 1e9))
        except (AttributeError, ctypes.ArgumentError):  # another binding version: the public wait
            ws.wait(int(timeout_s * 1e9))
            return [self.readers[i] for i in self.order]
        if n < 0:
            raise RuntimeError(f"DDS waitset wait failed: code {n}")
        picked = {self.by_attach.get(self.triggered[k] or 0, -1) for k in range(min(n, len(self.readers)))}
        if not picked or -1 in picked:
            return [self.readers[i] for i in self.order]
        return [self.readers[i] for i in sorted(picked, key=self.rank.__getitem__)]

    def poll(self, timeout_s: float) -> Iterator[tuple[str, str, bytes, list[tuple[bytes, int | None]], Any]]:
        """(component, topic, topic frame, [(CDR bytes, source ns)...], type) per reader with valid
        samples, up to :data:`TAKE_N` of them per reader and call.

        When the DDS binding gives no access to serialized samples, a sample is taken decoded and
        serialized again."""
        for component, name, reader, frame, cls in self.ready(timeout_s):
            if _take_raw is not None:
                got = _take_raw(reader._ref, self.mask, TAKE_N)
                if isinstance(got, int):
                    raise RuntimeError(f"DDS take failed on {component}.{name}: code {got}")
                taken = [(data, info.source_timestamp) for data, info in got if info.valid_data]
            else:
                taken = []
                for smp in reader.take(N=TAKE_N):
                    info = getattr(smp, "sample_info", None)
                    if info is not None and not info.valid_data:
                        continue
                    taken.append((smp.serialize(), info.source_timestamp if info else None))
            if taken:
                yield component, name, frame, taken, cls


class ReplayRing:
    """The listener's last messages, for a cache that missed some (the clone pattern's snapshot).

    Bounded by the samples they carry (``max_samples``: a batch counts its records) and by their
    payload bytes, whichever is reached first; the newest message is always kept. One ring serves
    both buses."""

    def __init__(self, max_samples: int, max_bytes: float = REPLAY_BYTES):
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.entries: deque[tuple[int, list[bytes], int]] = deque()  # (seq, frames, samples)
        self.samples = 0
        self.nbytes = 0

    def append(self, seq: int, frames: list[bytes], samples: int = 1) -> None:
        self.entries.append((seq, frames, samples))
        self.samples += samples
        self.nbytes += len(frames[2])
        while (self.nbytes > self.max_bytes or self.samples > self.max_samples) and len(self.entries) > 1:
            _, old, n = self.entries.popleft()
            self.nbytes -= len(old[2])
            self.samples -= n

    def oldest(self, next_seq: int) -> int:
        """Sequence number of the oldest message kept (``next_seq`` when empty)."""
        return self.entries[0][0] if self.entries else next_seq

    def after(self, since: int) -> list[tuple[int, list[bytes]]]:
        """(seq, frames) of the messages after ``since``, oldest first."""
        return [(seq, frames) for seq, frames, _ in self.entries if seq > since]


class Publisher:
    """The listener's PUB socket and its ring: numbers each message, sends it, keeps it for replay."""

    def __init__(self, pub: zmq.Socket, sender: Sender, ring: ReplayRing, counts: Counters):
        self.pub, self.sender, self.ring, self.counts = pub, sender, ring, counts

    def publish(self, frame: bytes, payload: bytes, samples: int = 1) -> None:
        frames = [frame, self.sender.envelope(), payload]
        self.pub.send_multipart(frames, copy=len(payload) < 4096)
        self.ring.append(self.sender.seq, frames, samples)
        self.counts["samples"] += samples
        self.counts["messages"] += 1


class KafkaSource:
    """The instance's topics on Kafka, as SAL records (format 1), in the listener's consumer group."""

    COMMIT_EVERY_S = 0.05
    STRAGGLERS_S = 0.02
    #: No record for this long while the broker holds records not read: the fetches starve (said).
    STARVED_S = 10.0
    #: Longest a camera event waits for the other topics' backlog (after a broker outage, a slow broker).
    CATCH_UP_S = 15.0

    def __init__(self, cfg: InstanceConfig, topics: list[tuple[str, str]], settings: Any | None = None):
        from protocols import kafka_wire as kw
        from protocols.bus import _sal_name
        from protocols.kafka_bus import KafkaReader
        from protocols.kafka_config import settings_from_env

        self.settings = settings or settings_from_env(os.environ, default_subname="sal")
        wanted: dict[str, set[str]] = {}
        kmap = load_keyword_map(cfg)
        self.by_name: dict[str, tuple[str, str, bytes, frozenset[str]]] = {}
        for component, name in topics:
            kt = kw.kafka_topic(self.settings.subname, component, _sal_name(component, name))
            st = sal.get_topic(component, name)
            ours = frozenset(st.field_map()) | frozenset(sal.PRIVATE_FIELDS)
            self.by_name[kt.name] = (component, name, f"sal.{component}.{name}".encode(), ours)
            wanted.setdefault(kt.name, set())
        for k in kmap.keywords:
            name = kw.kafka_topic(self.settings.subname, k.component, _sal_name(k.component, k.topic)).name
            if name in wanted and k.field in sal.get_topic(k.component, k.topic).field_map():
                wanted[name].add(k.field)
        self.triggers = {n for n, (c, t, _f, _o) in self.by_name.items() if c == cfg.camera and t in cfg.trigger_topics}
        ktopics = [kw.parse_topic_name(n) for n in self.by_name]
        self.reader = KafkaReader(self.settings, ktopics, f"hs-listener-{cfg.instrument}", wanted=wanted)
        self.last_commit = 0.0
        self.max_age = cfg.telemetry_max_age
        self.last_read: dict[str, float] = {}  # Kafka topic -> private_sndStamp of the last sample published
        self.behind_frame = f"ctl.behind.{cfg.instrument}".encode()
        self.last_record = self.last_starve_check = time.monotonic()
        self.starved = False

    def start(self, registry_wait_s: float = 30.0) -> None:
        self.reader.start(registry_wait_s=registry_wait_s)

    def poll(self, timeout_s: float, counts: Counters) -> Iterator[tuple[bytes, bytes, int]]:
        """(topic frame, SAL record, 1) per good record; before a camera event published while
        other topics are still behind it, (ctl.behind frame, :class:`BusBehind` payload, 0)."""
        bad_before = sum(self.reader.bad.values())
        batch = self.reader.poll(timeout=timeout_s)
        if not batch:
            self.reader.verify()  # idle: a new assignment's ends are asked now, not at the next camera event
        self.watch_starvation(bool(batch), counts)
        behind: list[str] = []
        if any(s.topic.name in self.triggers for s in batch):
            # Kafka orders records per topic only: what was written before a camera event on other
            # topics may still be in the fetcher's queue. Take it too, so that the event is published
            # after the samples written before it (the composer collects as of the event). After a
            # broker outage or behind a slow broker, the others may lag by seconds: read them up
            # to their end as the fetcher knows it (bounded) before the event goes out.
            batch += self.reader.poll(timeout=self.STRAGGLERS_S)
            event_stamp = max(s.snd_stamp for s in batch if s.topic.name in self.triggers)
            more, behind = self.catch_up(event_stamp)
            batch += more
        batch.sort(key=lambda s: s.snd_stamp)
        if behind:
            counts["events_published_behind"] += 1
            yield self.behind_frame, encode_payload(self.behind_note(behind, batch, event_stamp).encode()), 0
        for s in batch:
            component, name, frame, ours = self.by_name[s.topic.name]
            self.last_read[s.topic.name] = s.snd_stamp
            try:
                yield frame, avro_record(component, name, s.data, ours, s.kafka_time), 1
            except Exception as exc:  # a value our type cannot carry: counted, never fatal
                counts["malformed"] += 1
                log.warning("malformed %s.%s sample dropped (%s offset %d): %s", component, name, s.topic.name, s.offset, exc)
        counts["bad_records"] += sum(self.reader.bad.values()) - bad_before

    def watch_starvation(self, got: bool, counts: Counters) -> None:
        """Say so (once, until the reader has caught up) when no record came for STARVED_S while the
        fetcher knows of records not read: a broker answering fetches empty. The embedded Tansu does
        this when it cannot gather a deep backlog within the consumer's ``fetch.wait.max.ms``
        (10 ms, for latency): a longer wait in the consumer file lets it through."""
        now = time.monotonic()
        if got:
            self.last_record = now
            return
        if now - self.last_record < self.STARVED_S or now - self.last_starve_check < self.STARVED_S:
            return
        self.last_starve_check = now
        waiting = sorted(t for (t, _p), end in self.reader.lagging().items() if end is not None)
        if not waiting:
            self.starved = False  # caught up: a later starvation is said again
        elif not self.starved:
            self.starved = True
            counts["fetches_starved"] += 1
            log.warning("no record for %.0f s while the broker holds unread records on %d topic(s) (%s): its fetches come back "
                        "empty; with the embedded Tansu, raise fetch.wait.max.ms in the consumer file (now %s ms)",
                        now - self.last_record, len(waiting), ", ".join(waiting[:3]),
                        self.reader.settings.consumer_defaults.get("fetch.wait.max.ms", "librdkafka's default"))  # fmt: skip

    def behind_note(self, behind: list[str], batch: list[Any], event_stamp: float) -> BusBehind:
        """The span whose samples of the topics still behind may arrive after the event: from the
        last sample read of each (or the oldest a header reads, telemetry_max_age before) to the event."""
        last = dict(self.last_read)
        for s in batch:
            last[s.topic.name] = s.snd_stamp
        since = min(min(last.get(name, event_stamp - self.max_age) for name in behind), event_stamp)
        names = sorted({"{}.{}".format(*self.by_name[name][:2]) for name in behind})
        log.warning("camera event published with %d topic(s) still behind since %.3f TAI: %s", len(names), since, ", ".join(names[:5]))
        return BusBehind(since, event_stamp, names)

    def catch_up(self, event_stamp: float) -> tuple[list[Any], list[str]]:
        """What the other topics hold up to the camera event, before it is published (at most
        CATCH_UP_S). A topic is read until its first known end (the high watermark when it was
        first seen behind: what came later was written after the event) or until a sample stamped
        after the event. Ends are asked again after each read: after an outage the fetcher learns
        them only as its fetch responses come back, and the reader asks the broker for those of
        partitions assigned anew (unknown until it answers: read until a sample after the event).
        Returns the samples read and the topics still behind when it gave up."""
        out: list[Any] = []
        ends: dict[tuple[str, int], int | None] = {}
        done: set[tuple[str, int]] = set()
        deadline = time.monotonic() + self.CATCH_UP_S
        while True:
            lagging = self.reader.lagging()
            for tp, end in lagging.items():
                if ends.get(tp) is None:
                    ends[tp] = end
            behind = [tp for tp in lagging if tp not in done]
            if not behind:
                return out, []
            if time.monotonic() > deadline:
                return out, sorted({t for t, _ in behind})
            for s in self.reader.poll(timeout=0.05):
                out.append(s)
                tp = (s.topic.name, s.partition)
                end = ends.get(tp)
                if s.snd_stamp > event_stamp or (end is not None and s.offset + 1 >= end):
                    done.add(tp)

    def refill(self, t0: float, t1: float, deadline_s: float = 60.0) -> Iterator[tuple[bytes, bytes]]:
        """The records of [t0 - telemetry_max_age, t1] (TAI) again, event topics from their first
        (compacted) record, as SAL records: a consumer of its own that commits nothing, positioned by
        the records' timestamps (offsets for times). For a cache that no longer holds a window."""
        from confluent_kafka import Consumer, TopicPartition

        from protocols import kafka_wire as kw

        def ms(t: float) -> int:
            return int(utc_from_tai(t) * 1000)

        consumer = Consumer(self.settings.consumer_config(f"hs-refill-{os.getpid()}-{time.time_ns()}", **{"enable.auto.commit": False}))
        try:
            starts = consumer.offsets_for_times([TopicPartition(n, 0, ms(t0 - self.max_age)) for n in self.by_name], timeout=10.0)
            todo: dict[str, int] = {}  # topic -> end offset (exclusive)
            assign = []
            for tp in starts:
                low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, 0), timeout=10.0, cached=False)
                start = low if kw.parse_topic_name(tp.topic).kind == "event" else (tp.offset if tp.offset >= 0 else high)
                if start < high:
                    todo[tp.topic] = high
                    assign.append(TopicPartition(tp.topic, 0, max(start, low)))
            consumer.assign(assign)
            end = time.monotonic() + deadline_s
            while todo and time.monotonic() < end:
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    name = msg.topic()
                    if msg.error() is not None or name not in todo:
                        continue
                    if msg.offset() + 1 >= todo[name] or msg.timestamp()[1] > ms(t1):
                        todo.pop(name)
                    if msg.timestamp()[1] > ms(t1):
                        continue
                    component, topic, frame, ours = self.by_name[name]
                    try:
                        _, data = kw.decode_value(msg.value(), self.reader.registry.codec, (), topic=name, offset=msg.offset())
                        yield frame, avro_record(component, topic, data, ours, msg.timestamp()[1] / 1e3)
                    except Exception as exc:  # noqa: BLE001 (a bad record: said, skipped)
                        log.warning("refill: %s offset %d skipped: %s", name, msg.offset(), exc)
            if todo:
                log.warning("refill: %d topic(s) not read to the end in %.0f s: %s", len(todo), deadline_s, ", ".join(sorted(todo)))
        finally:
            consumer.close()

    def commit(self, force: bool = False) -> None:
        """Commit what has been published (at most every COMMIT_EVERY_S unless ``force``)."""
        now = time.monotonic()
        if force or now - self.last_commit >= self.COMMIT_EVERY_S:
            self.last_commit = now
            self.reader.commit()

    def close(self) -> None:
        self.reader.close(commit=True)


def avro_record(component: str, name: str, data: dict[str, Any], ours: frozenset[str], kafka_time: float) -> bytes:
    """A decoded Kafka sample as the SAL record the DDS bus would have given (format 1): fields we do
    not define (``private_revCode``, ``private_efdStamp``, ...) are left out; the Kafka record time
    stands for the DDS source timestamp."""
    idx = int(data.get("salIndex", 0))
    fields = {k: v for k, v in data.items() if k in ours}
    cdr = sal.make_sample(component, name, idx, **fields).serialize()
    snd = data.get("private_sndStamp")
    return salrecord.encode(cdr, idx, snd if isinstance(snd, float) else None, tai_now(), int(kafka_time * 1e9))


try:  # Cyclone DDS's own take of serialized samples; the public take() decodes every sample
    from cyclonedds._clayer import ddspy_take as _take_raw
except ImportError:  # pragma: no cover - another binding version
    _take_raw = None


def serve_replays(router: zmq.Socket, ring: ReplayRing, sender: Sender, counts: Counters, refill: Any = None) -> None:
    """Answer ``{op: replay, since: seq}``: the messages after ``since`` still in the ring, as
    ``[topic, seq, base64 of the payload]`` (a SAL record or a batch of them, as sent).

    A cache that saw a gap or restarted asks for what it missed (the clone pattern's snapshot).
    On Kafka, ``{op: refill, t0, t1}`` (hs-catchup) has ``refill`` publish that window again from
    the log and answers how many samples it published.
    """
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        ident, rest = split_identity(frames)
        try:
            req = decode_request(decode(rest).payload, (RefillRequest, ReplayRequest), default_op="replay")
            if isinstance(req, RefillRequest):
                if refill is None:
                    raise ValueError("refill needs the Kafka bus (this listener reads DDS, which keeps no log)")
                done = RefillReply(refill(req.t0, req.t1))
                router.send_multipart(ident + sender.frames(done.topic(), done.encode()))
                continue
            since = req.since
            msgs = [(f[0].decode(), seq, base64.b64encode(f[2]).decode()) for seq, f in ring.after(since)]
            body = ReplayReply(sender.sender, ring.oldest(sender.seq + 1), msgs).encode()
        except (EnvelopeError, KeyError, TypeError, ValueError) as exc:
            counts["bad_requests"] += 1
            body = ErrorReply(f"bad replay request: {exc}").encode()
        router.send_multipart(ident + sender.frames("ctl.reply.replay", body))


def records_of(taken: list[tuple[bytes, int | None]], cls: Any, counts: Counters, what: str) -> list[bytes]:
    """SAL records of one take (one reception time: the take's); a sample that cannot be read is
    counted and logged, never fatal."""
    out = []
    now = tai_now()
    for cdr, src_ns in taken:
        try:
            out.append(sample_record(cdr, src_ns, cls, now))
        except Exception as exc:  # noqa: BLE001 - a sample we cannot read is counted, never fatal
            counts["malformed"] += 1
            log.warning("malformed %s sample dropped: %s", what, exc)
    return out


SUBSCRIBERS_WAIT_S = 2.0  # a (re)started listener waits this long at most for its subscribers


def wait_for_subscribers(pub: zmq.Socket, prefixes: list[bytes], timeout_s: float) -> set[bytes]:
    """Until the cache's and the composer's subscriptions reach this XPUB socket (or ``timeout_s``);
    returns the prefixes still missing. A restarted listener's first takes are what the bus kept
    for it (the camera's last events): published before its subscribers reconnect, ZeroMQ would
    drop them, and with them the exposures taken while it was down."""
    want = {b"\x01" + p for p in prefixes}
    end = time.monotonic() + timeout_s
    while want and (left := end - time.monotonic()) > 0:
        if pub.poll(min(50.0, left * 1000.0)):
            want.discard(pub.recv())
    return {w[1:] for w in want}


def run(cfg: InstanceConfig, stop: Stop) -> None:
    topics = needed_topics(cfg)
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)  # a PUB socket that hears its subscriptions (wait_for_subscribers)
    pub.setsockopt(zmq.SNDHWM, 200000)
    pub.bind(cfg.endpoints.listener_pub)
    router = ctx.socket(zmq.ROUTER)
    router.bind(cfg.endpoints.listener_router)
    ring = ReplayRing(cfg.listener_replay)
    missing = wait_for_subscribers(pub, [b"sal.", f"sal.{cfg.camera}.".encode()], SUBSCRIBERS_WAIT_S)
    if missing:
        log.warning("no subscriber to %s after %.0f s: publishing anyway", b", ".join(sorted(missing)).decode(), SUBSCRIBERS_WAIT_S)
    if cfg.bus == "kafka":
        run_kafka(cfg, stop, topics, pub, router, ring)
        return
    sender = Sender(sender_id("listener", cfg.instrument))
    status_sender = Sender(sender_id("listener-status", cfg.instrument))  # sal.* numbers stay contiguous
    bus = DdsBus(cfg.dds_domain, topics, urgent=frozenset(t for t in topics if t[0] == cfg.camera))
    log.info(
        "listening on DDS domain %d to %d topics, publishing on %s",
        cfg.dds_domain,
        len(topics),
        cfg.endpoints.listener_pub,
    )
    counts = Counters()
    out = Publisher(pub, sender, ring, counts)
    last_status = time.monotonic()
    pacer = GcPacer()
    while not stop.requested:
        before = counts["samples"]
        for component, name, frame, taken, cls in bus.poll(0.2):
            recs = records_of(taken, cls, counts, f"{component}.{name}")
            if component == cfg.camera or len(recs) == 1:  # the composer's events: one per message
                for rec in recs:
                    out.publish(frame, rec)
            elif recs:
                out.publish(frame, salrecord.encode_batch(recs), len(recs))
        quiet = counts["samples"] == before
        pacer.step(quiet=quiet)
        serve_replays(router, ring, sender, counts)
        if time.monotonic() - last_status > 10:
            last_status = time.monotonic()
            pub.send_multipart(status_sender.frames(f"ctl.status.listener.{cfg.instrument}", ProcessStatus(counts.as_dict()).encode()))
            while pub.poll(0):  # subscriptions heard since: read, nothing to do with them
                pub.recv()
        if not quiet:
            bus.pause(GATHER_S)
    pub.close(linger=500)
    router.close(linger=0)


def run_kafka(cfg: InstanceConfig, stop: Stop, topics: list[tuple[str, str]], pub: zmq.Socket, router: zmq.Socket, ring: ReplayRing) -> None:
    """The listener's loop on Kafka: publish each batch, then commit its offsets."""
    sender = Sender(sender_id("listener", cfg.instrument) + RESUMING)
    status_sender = Sender(sender_id("listener-status", cfg.instrument))
    try:
        source = KafkaSource(cfg, topics)
    except ValueError as exc:  # settings: no registry named, a bad variable
        log.error("cannot listen on Kafka: %s", exc)
        raise SystemExit(2) from None
    while not stop.requested:
        try:
            source.start(registry_wait_s=10.0)
            break
        except Exception as exc:  # noqa: BLE001 (registry or broker unreachable: said, retried)
            log.error("Kafka bus not reachable, retrying in 2 s: %s", exc)
            time.sleep(2.0)
    else:
        return
    log.info("listening on Kafka (%s, group hs-listener-%s) to %d topics, publishing on %s",
             source.settings.broker_addr, cfg.instrument, len(topics), cfg.endpoints.listener_pub)  # fmt: skip
    counts = Counters()
    out = Publisher(pub, sender, ring, counts)
    last_status = time.monotonic()
    pacer = GcPacer()

    def refill(t0: float, t1: float) -> int:
        n = 0
        for frame, payload in source.refill(t0, t1):
            out.publish(frame, payload)
            n += 1
        counts["refilled"] += n
        log.info("refill of %.3f .. %.3f TAI: %d samples published again from Kafka", t0, t1, n)
        return n

    while not stop.requested:
        before = counts["samples"]
        for frame, payload, samples in source.poll(0.2, counts):
            out.publish(frame, payload, samples)
        source.commit()
        pacer.step(quiet=counts["samples"] == before)
        serve_replays(router, ring, sender, counts, refill)
        if time.monotonic() - last_status > 10:
            last_status = time.monotonic()
            counts["bad_records"] = sum(source.reader.bad.values())
            pub.send_multipart(status_sender.frames(f"ctl.status.listener.{cfg.instrument}", ProcessStatus(counts.as_dict(), bad=dict(source.reader.bad)).encode()))
            while pub.poll(0):  # subscriptions heard since: read, nothing to do with them
                pub.recv()
    source.commit(force=True)
    source.close()
    pub.close(linger=500)
    router.close(linger=0)


def main(argv: list[str] | None = None) -> None:
    run_process("hs-listener", __doc__, lambda cfg: lambda stop: run(cfg, stop), argv)


if __name__ == "__main__":
    main()
