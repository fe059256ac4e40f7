"""hs-listener: joins the DDS domain and republishes every SAL sample the instance needs on ZeroMQ.

Subscribes to exactly the topics of the instrument's keyword map plus the camera triggers, and
publishes each sample unchanged (all fields, its private_sndStamp and its DDS source timestamp) on
a PUB socket, topic ``sal.<Component>.<topic>``. Bus access sits behind :class:`DdsBus` so another
backend (Kafka/Avro) can replace it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Any, Iterator

import zmq

from procs.common import Counters, Stop, base_parser, setup
from protocols import sal
from protocols.config import InstanceConfig, load_keyword_map
from protocols.envelope import EnvelopeError, Sender, decode, sender_id, split_identity, tai_now

log = logging.getLogger("listener")
REPLAY_BYTES = 48e6  # payload bytes the replay ring keeps, whatever the message count


def needed_topics(cfg: InstanceConfig) -> list[tuple[str, str]]:
    """(component, topic) pairs the instance listens to: keyword map sources and camera triggers."""
    kmap = load_keyword_map(cfg)
    out = {(cfg.camera, t) for t in cfg.trigger_topics}
    out |= {(k.component, k.topic) for k in kmap.keywords}
    return sorted(out)


def _json_safe(v: Any) -> Any:
    """Values as they are: NaN/inf travel as JSON NaN/Infinity and are reduced to undefined later."""
    return v


def sample_payload(component: str, topic: str, sample: Any, source_ns: int | None) -> dict[str, Any]:
    data = sal.sample_to_dict(sample)
    sal_index = data.pop("salIndex", 0)
    snd = data.get("private_sndStamp", 0.0)
    return {
        "component": component,
        "topic": topic,
        "salIndex": sal_index,
        "sndStamp": snd if isinstance(snd, (int, float)) and math.isfinite(snd) else None,
        "srcStamp": source_ns,
        "rcvStamp": tai_now(),
        "data": {k: _json_safe(v) for k, v in data.items()},
    }


class DdsBus:
    """Readers for a set of SAL topics on one DDS domain, drained through one WaitSet."""

    def __init__(self, domain: int, topics: list[tuple[str, str]]):
        sal.ensure_loopback_dds()
        from cyclonedds.core import ReadCondition, SampleState, ViewState, InstanceState, WaitSet
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self.dp = DomainParticipant(domain)
        self.waitset = WaitSet(self.dp)
        self.readers: list[tuple[str, str, Any]] = []
        for component, name in topics:
            st = sal.get_topic(component, name)
            qos = sal.qos_for(st.kind)
            topic = Topic(self.dp, st.dds_name, sal.idl_class(component, name), qos=qos)
            reader = DataReader(self.dp, topic, qos=sal.reader_qos(st.kind))
            cond = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
            self.waitset.attach(cond)
            self.readers.append((component, name, reader))

    def poll(self, timeout_s: float) -> Iterator[tuple[str, str, Any, int | None]]:
        from cyclonedds.util import duration

        self.waitset.wait(duration(seconds=timeout_s))
        for component, name, reader in self.readers:
            for s in reader.take(N=512):
                info = getattr(s, "sample_info", None)
                if info is not None and not info.valid_data:
                    continue
                yield component, name, s, (info.source_timestamp if info is not None else None)


def serve_replays(router: zmq.Socket, ring: deque, sender: Sender, counts: Counters) -> None:
    """Answer ``{op: replay, since: seq}``: the messages after ``since`` still in the ring.

    A cache that saw a gap or restarted asks for what it missed (the clone pattern's snapshot).
    """
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        ident, rest = split_identity(frames)
        try:
            req = decode(rest).payload
            since = int(req["since"])
            msgs = [[f[0].decode(), seq, f[2].decode()] for seq, f in ring if seq > since]
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
    while not stop.requested:
        for component, name, sample, src_ns in bus.poll(0.2):
            try:
                payload = sample_payload(component, name, sample, src_ns)
            except Exception as exc:  # a sample we cannot decode is counted, never fatal
                counts["malformed"] += 1
                log.warning("malformed %s.%s sample dropped: %s", component, name, exc)
                continue
            frames = sender.frames(f"sal.{component}.{name}", payload)
            pub.send_multipart(frames)
            ring.append((sender.seq, frames))
            ring_bytes += len(frames[2])
            while (ring_bytes > REPLAY_BYTES or len(ring) > cfg.listener_replay) and len(ring) > 1:
                ring_bytes -= len(ring.popleft()[1][2])
            counts["samples"] += 1
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
