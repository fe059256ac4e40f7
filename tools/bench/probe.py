"""The bench's independent observers, run as their own process (``python -m tools.bench.probe``).

A forwarder-side fast-path client (:class:`protocols.fastpath.FastPathClient`'s socket, subscribed
to ``hdr.<instrument>.``) and an EFD-like DDS reader of ``<CSC>.largeFileObjectAvailable`` print one
JSON line per arrival on stdout, with ``time.time()`` taken as soon as the message is received
(before any parsing), so the bench can compare it with the time the simulator wrote
endOfImageTelemetry. Being a separate process, the observers never wait for the bench's own
threads. Lines::

    {"k": "composer_ready"}  {"k": "lfo_ready"}                     (discovery done)
    {"k": "fast", "image": ..., "t": ..., "v": 1, "complete": true, "bytes": n}
    {"k": "skipped", "image": ..., "reason": ...}                   (composer did not compose it)
    {"k": "lfo", "image": ..., "t": ..., "v": 1, "bytes": n, "md5": ..., "url": ...}
    {"k": "summary", "gaps": n, "received": n, "parse_ms": [...], "hdus": n, "cards": n, "cache_rtt_ms": [...]}

Runs until stdin is closed; then parses a few of the received headers into ``fitsio.FITSHDR``
(as a forwarder would) to check them and time that step, prints the summary and exits. With
``--cache`` it also times a cache ``status`` round trip every 0.1 s, which shows the cache's stalls.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time

import zmq

from protocols import sal
from protocols.envelope import Envelope, EnvelopeError
from protocols.fastpath import FastPathClient, parse_header_payload
from protocols.timescale import utc_from_tai

_COMPLETE = re.compile(rb'"complete":(true|false)')
_VERSION = re.compile(rb'"version":(\d+)')
_COMPOSE_S = re.compile(rb'"composeSeconds":([0-9.eE+-]+)')
_STAMPS = {  # the payload's own timing of the composition (procs/composer.py)
    "collect_s": re.compile(rb'"collectSeconds":([0-9.eE+-]+)'),
    "listener_tai": re.compile(rb'"listenerStamp":([0-9.eE+-]+)'),
    "composer_tai": re.compile(rb'"composerStamp":([0-9.eE+-]+)'),
}
KEEP = 3  # headers kept for the parse check


class Out:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def emit(self, **kw: object) -> None:
        line = json.dumps(kw)
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def fast_loop(endpoint: str, instrument: str, out: Out, stop: threading.Event, kept: list, stats: dict) -> None:
    client = FastPathClient(endpoint, instrument=instrument)
    sock = client.sock
    assert sock is not None
    # the composer's other messages (status, skipped exposures, faults) share the fast path's
    # sequence numbers: take them too, so that gaps are real losses; the first status says the
    # composer is up and warmed.
    sock.setsockopt(zmq.SUBSCRIBE, b"ctl.")
    ready = False
    while not stop.is_set():
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart()
        t = time.time()
        topic = frames[0].decode("ascii", "replace")
        try:
            env = Envelope.decode(frames[1]) if len(frames) == 3 else None
        except EnvelopeError:
            env = None
        if env is None:
            stats["malformed"] += 1
            continue
        st = client.tracker.check(env)
        if st.duplicate:
            continue
        if topic.startswith("ctl.status.composer"):
            if not ready:
                ready = True
                out.emit(k="composer_ready", t=t)
            continue
        if topic.startswith("ctl.skipped."):
            try:
                body = json.loads(frames[2])
                out.emit(k="skipped", image=body.get("imageName", ""), reason=str(body.get("reason", "")), t=t)
            except ValueError:
                pass
            continue
        if not topic.startswith("hdr."):
            continue
        image = topic.split(".", 2)[2] if topic.count(".") >= 2 else ""
        head = frames[2][:4096]
        m_c = _COMPLETE.search(head)
        m_v = _VERSION.search(head)
        m_s = _COMPOSE_S.search(head) or _COMPOSE_S.search(frames[2], max(len(frames[2]) - 4096, 0))
        stats["received"] += 1
        out.emit(
            k="fast",
            image=image,
            t=t,
            sent=utc_from_tai(env.sent),  # when the composer sent it (its envelope time, as unix time)
            compose_s=float(m_s.group(1)) if m_s else None,
            **{k: float(m.group(1)) for k, rx in _STAMPS.items() if (m := rx.search(head))},
            v=int(m_v.group(1)) if m_v else 0,
            complete=bool(m_c and m_c.group(1) == b"true"),
            bytes=len(frames[2]),
        )
        if len(kept) < KEEP:
            kept.append((topic, env, frames[2]))
    stats["gaps"] = client.gaps
    client.close()


def cache_loop(endpoint: str, instrument: str, stop: threading.Event, rtts: list[float], period: float = 0.1) -> None:
    """Round trip of a cache ``status`` request every ``period`` s: shows when the cache stalls."""
    from protocols.envelope import Sender, sender_id
    from protocols.messages import CacheClient, CacheUnavailable, StatusRequest

    client = CacheClient(endpoint, Sender(sender_id("bench-probe", instrument)), timeout_s=5.0)
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            client.request(StatusRequest())
            rtts.append((time.perf_counter() - t0) * 1000.0)
        except (CacheUnavailable, EnvelopeError):
            rtts.append(5000.0)
        stop.wait(period)
    client.close()


def dds_loop(domain: int, csc: str, out: Out, stop: threading.Event) -> None:
    sal.ensure_loopback_dds()
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    st = sal.get_topic(csc, "largeFileObjectAvailable")
    qos = sal.qos_for(st.kind)
    dp = DomainParticipant(domain)
    reader = DataReader(dp, Topic(dp, st.dds_name, sal.idl_class(csc, "largeFileObjectAvailable"), qos=qos), qos=qos)
    ws = WaitSet(dp)
    ws.attach(ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any))
    ready = False
    while not stop.is_set():
        ws.wait(duration(milliseconds=100))
        if not ready and reader.get_subscription_matched_status().current_count > 0:
            ready = True
            out.emit(k="lfo_ready", t=time.time())
        samples = reader.take(N=256)
        t = time.time()
        for s in samples:
            info = getattr(s, "sample_info", None)
            if info is not None and not info.valid_data:
                continue
            out.emit(k="lfo", image=s.id, t=t, v=int(s.version), bytes=int(s.byteSize), md5=s.checkSum, url=s.url)


def kafka_loop(csc: str, out: Out, stop: threading.Event) -> None:
    """largeFileObjectAvailable on Kafka (``--bus kafka``), read from the next record on."""
    from protocols.bus import KafkaSal

    bus = KafkaSal.from_env(os.environ)
    reader = bus.reader([(csc, "largeFileObjectAvailable")], start_at="latest")
    bus.start()
    reader.wait_assigned(30.0)
    out.emit(k="lfo_ready", t=time.time())
    while not stop.is_set():
        samples = reader.poll(0.05)
        t = time.time()
        for s in samples:
            d = s.data
            out.emit(k="lfo", image=d["id"], t=t, v=int(d["version"]), bytes=int(d["byteSize"]), md5=d["checkSum"], url=d["url"])
    bus.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hs-bench-probe", description=__doc__.splitlines()[0])
    p.add_argument("--fast", required=True, help="composer fast-path PUB endpoint")
    p.add_argument("--instrument", required=True)
    p.add_argument("--domain", type=int, required=True)
    p.add_argument("--csc", required=True, help="CSC announcing the headers (e.g. ATHeaderService)")
    p.add_argument("--bus", choices=("dds", "kafka"), default="dds", help="where largeFileObjectAvailable is read")
    p.add_argument("--cache", help="cache ROUTER endpoint: time a status request every 0.1 s")
    p.add_argument("--nice", type=int, default=0, help="scheduling priority of the probe's threads (negative: root only)")
    args = p.parse_args(argv)
    sys.setswitchinterval(0.0005)
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # this thread; the threads started below inherit it
        except OSError:
            pass
    out = Out()
    stop = threading.Event()
    kept: list = []
    stats = {"received": 0, "malformed": 0, "gaps": 0}
    threads = [
        threading.Thread(target=fast_loop, args=(args.fast, args.instrument, out, stop, kept, stats), daemon=True),
        threading.Thread(target=kafka_loop, args=(args.csc, out, stop), daemon=True)
        if args.bus == "kafka"
        else threading.Thread(target=dds_loop, args=(args.domain, args.csc, out, stop), daemon=True),
    ]
    rtts: list[float] = []
    if args.cache:
        threads.append(threading.Thread(target=cache_loop, args=(args.cache, args.instrument, stop, rtts), daemon=True))
    for th in threads:
        th.start()
    try:
        sys.stdin.read()  # until the bench closes our stdin
    except KeyboardInterrupt:
        pass
    stop.set()
    for th in threads:
        th.join(timeout=2.0)
    parse_ms: list[float] = []
    hdus = cards = 0
    errors: list[str] = []
    for topic, env, raw in kept:
        t0 = time.perf_counter()
        try:
            msg = parse_header_payload(json.loads(raw), topic, env)
        except ValueError as exc:
            errors.append(f"{topic}: {exc}")
            continue
        parse_ms.append((time.perf_counter() - t0) * 1000.0)
        hdus = len(msg.hdus)
        cards = sum(len(h) for h in msg.headers)
    out.emit(k="summary", gaps=stats["gaps"], received=stats["received"], malformed=stats["malformed"],
             parse_ms=parse_ms, hdus=hdus, cards=cards, errors=errors, cache_rtt_ms=[round(x, 3) for x in rtts])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
