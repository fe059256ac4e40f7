"""hs-listener: joins the DDS domain and republishes every SAL sample the instance needs on ZeroMQ.

Subscribes to exactly the topics of the instrument's keyword map plus the camera triggers, and
publishes each sample unchanged on a PUB socket, topic ``sal.<Component>.<topic>``: its serialized
bytes as a SAL record (:mod:`protocols.salrecord`, with salIndex, private_sndStamp, the time it was
taken and its DDS source timestamp in a fixed header). Bus access sits behind :class:`DdsBus` so another
backend (Kafka/Avro) can replace it.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from typing import Any, Iterator

import zmq

from procs.common import Counters, GcPacer, Stop, base_parser, setup
from protocols import sal, salrecord
from protocols.config import InstanceConfig, load_keyword_map
from protocols.envelope import EnvelopeError, Sender, decode, sender_id, split_identity, tai_now
from protocols.messages import ReplayRequest

log = logging.getLogger("listener")
REPLAY_BYTES = 48e6  # payload bytes the replay ring keeps, whatever the message count


def needed_topics(cfg: InstanceConfig) -> list[tuple[str, str]]:
    """(component, topic) pairs the instance listens to: keyword map sources and camera triggers."""
    kmap = load_keyword_map(cfg)
    out = {(cfg.camera, t) for t in cfg.trigger_topics}
    out |= {(k.component, k.topic) for k in kmap.keywords}
    return sorted(out)


def sample_record(cdr: bytes, source_ns: int | None, decode_cls: Any) -> bytes:
    """One sample's SAL record (:mod:`protocols.salrecord`): its CDR bytes, unchanged, behind a
    header with salIndex and private_sndStamp, read without decoding the sample."""
    peeked = salrecord.index_and_stamp(cdr)
    if peeked is None:  # an encoding read only by the generic deserializer
        sample = decode_cls.deserialize(cdr)
        peeked = (sample.salIndex, sample.private_sndStamp)
    return salrecord.encode(cdr, peeked[0], peeked[1], tai_now(), source_ns)


class DdsBus:
    """Readers for a set of SAL topics on one DDS domain, drained through one WaitSet.

    Samples are taken as their serialized bytes: the listener never decodes a sample, it forwards it.
    """

    def __init__(self, domain: int, topics: list[tuple[str, str]]):
        sal.ensure_loopback_dds()
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self.dp = DomainParticipant(domain)
        self.waitset = WaitSet(self.dp)
        self.readers: list[tuple[str, str, Any, bytes, Any]] = []
        self.mask = SampleState.Any | ViewState.Any | InstanceState.Any
        for component, name in topics:
            st = sal.get_topic(component, name)
            cls = sal.idl_class(component, name)
            topic = Topic(self.dp, st.dds_name, cls, qos=sal.qos_for(st.kind))
            reader = DataReader(self.dp, topic, qos=sal.reader_qos(st.kind))
            cond = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
            self.waitset.attach(cond)
            self.readers.append((component, name, reader, f"sal.{component}.{name}".encode(), cls))

    def poll(self, timeout_s: float) -> Iterator[tuple[str, str, bytes, bytes, int | None, Any]]:
        """(component, topic, topic frame, CDR bytes, source ns, type) per valid sample.

        When the DDS binding gives no access to serialized samples, a sample is taken decoded and
        serialized again."""
        from cyclonedds.util import duration

        self.waitset.wait(duration(seconds=timeout_s))
        for component, name, reader, frame, cls in self.readers:
            if _take_raw is not None:
                got = _take_raw(reader._ref, self.mask, 512)
                if isinstance(got, int):
                    raise RuntimeError(f"DDS take failed on {component}.{name}: code {got}")
                for data, info in got:
                    if info.valid_data:
                        yield component, name, frame, data, info.source_timestamp, cls
            else:
                for s in reader.take(N=512):
                    info = getattr(s, "sample_info", None)
                    if info is not None and not info.valid_data:
                        continue
                    yield component, name, frame, s.serialize(), (info.source_timestamp if info else None), cls


try:  # Cyclone DDS's own take of serialized samples; the public take() decodes every sample
    from cyclonedds._clayer import ddspy_take as _take_raw
except ImportError:  # pragma: no cover - another binding version
    _take_raw = None


def serve_replays(router: zmq.Socket, ring: deque, sender: Sender, counts: Counters) -> None:
    """Answer ``{op: replay, since: seq}``: the messages after ``since`` still in the ring, as
    ``[topic, seq, base64 of the SAL record]``.

    A cache that saw a gap or restarted asks for what it missed (the clone pattern's snapshot).
    """
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        ident, rest = split_identity(frames)
        try:
            since = ReplayRequest.decode(decode(rest).payload).since
            msgs = [[f[0].decode(), seq, base64.b64encode(f[2]).decode()] for seq, f in ring if seq > since]
            body = {"sender": sender.sender, "oldest": ring[0][0] if ring else sender.seq + 1, "messages": msgs}
        except (EnvelopeError, KeyError, TypeError, ValueError) as exc:
            counts["bad_requests"] += 1
            body = {"error": f"bad replay request: {exc}"}
        router.send_multipart(ident + sender.frames("ctl.reply.replay", body))


def run(cfg: InstanceConfig, stop: Stop) -> None:
    topics = needed_topics(cfg)
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 200000)
    pub.bind(cfg.endpoints.listener_pub)
    sender = Sender(sender_id("listener", cfg.instrument))
    router = ctx.socket(zmq.ROUTER)
    router.bind(cfg.endpoints.listener_router)
    status_sender = Sender(sender_id("listener-status", cfg.instrument))  # sal.* numbers stay contiguous
    ring: deque[tuple[int, list[bytes]]] = deque()
    ring_bytes = 0
    bus = DdsBus(cfg.dds_domain, topics)
    log.info(
        "listening on DDS domain %d to %d topics, publishing on %s",
        cfg.dds_domain,
        len(topics),
        cfg.endpoints.listener_pub,
    )
    counts = Counters()
    last_status = time.monotonic()
    pacer = GcPacer()
    while not stop.requested:
        before = counts["samples"]
        for component, name, frame, cdr, src_ns, cls in bus.poll(0.2):
            try:
                payload = sample_record(cdr, src_ns, cls)
            except Exception as exc:  # a sample we cannot read is counted, never fatal
                counts["malformed"] += 1
                log.warning("malformed %s.%s sample dropped: %s", component, name, exc)
                continue
            frames = [frame, sender.envelope(), payload]
            pub.send_multipart(frames)
            ring.append((sender.seq, frames))
            ring_bytes += len(payload)
            while (ring_bytes > REPLAY_BYTES or len(ring) > cfg.listener_replay) and len(ring) > 1:
                ring_bytes -= len(ring.popleft()[1][2])
            counts["samples"] += 1
        pacer.step(quiet=counts["samples"] == before)
        serve_replays(router, ring, sender, counts)
        if time.monotonic() - last_status > 10:
            last_status = time.monotonic()
            pub.send_multipart(status_sender.frames(f"ctl.status.listener.{cfg.instrument}", {"counts": counts.as_dict()}))
    pub.close(linger=500)
    router.close(linger=0)


def main(argv: list[str] | None = None) -> None:
    p = base_parser("hs-listener", __doc__.splitlines()[0])
    args = p.parse_args(argv)
    cfg = setup(args, "hs-listener")
    run(cfg, Stop())


if __name__ == "__main__":
    main()
