"""hs-cache: the time-indexed store of every SAL sample the instance listens to.

SUBscribes to the listener; per (topic, salIndex) keeps a history ordered by the sample's own TAI
time (private_sndStamp), bounded by age and count. Answers on a ROUTER socket:
``collect`` (snapshots as of several TAI times plus every sample in windows, after catching up with
a given listener sequence number), ``range``, ``latest`` and ``status``. Event time, never arrival
time: late or replayed samples land in their place in the history.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict
from typing import Any

import zmq

from procs.common import Counters, Stop, base_parser, setup
from protocols import messages
from protocols.config import InstanceConfig
from protocols.envelope import EnvelopeError, GapTracker, Sender, decode, sender_id

log = logging.getLogger("cache")


class History:
    """Samples of one topic key, ordered by TAI time, bounded by age and count."""

    __slots__ = ("times", "samples")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.samples: list[dict[str, Any]] = []

    def add(self, t: float, sample: dict[str, Any], max_samples: int, max_age: float) -> None:
        if not self.times or t >= self.times[-1]:
            self.times.append(t)
            self.samples.append(sample)
        else:
            i = bisect.bisect_right(self.times, t)
            self.times.insert(i, t)
            self.samples.insert(i, sample)
        horizon = self.times[-1] - max_age
        drop = max(len(self.times) - max_samples, bisect.bisect_left(self.times, horizon))
        if drop > 0:
            del self.times[:drop]
            del self.samples[:drop]

    def as_of(self, t: float) -> dict[str, Any] | None:
        i = bisect.bisect_right(self.times, t)
        return self.samples[i - 1] if i else None

    def between(self, t0: float, t1: float) -> list[dict[str, Any]]:
        return self.samples[bisect.bisect_left(self.times, t0) : bisect.bisect_right(self.times, t1)]


class Store:
    """All histories, keyed ``Component.topic:salIndex``."""

    def __init__(self, max_samples: int, max_age: float):
        self.histories: dict[str, History] = defaultdict(History)
        self.max_samples = max_samples
        self.max_age = max_age

    def add(self, sample: dict[str, Any]) -> None:
        t = sample.get("sndStamp")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or t != t or t <= 0:
            raise ValueError(f"sample has no usable private_sndStamp: {t!r}")
        key = messages.topic_key(sample["component"], sample["topic"], int(sample.get("salIndex", 0)))
        self.histories[key].add(float(t), sample, self.max_samples, self.max_age)

    def as_of(self, key: str, t: float) -> dict[str, Any] | None:
        h = self.histories.get(key)
        return h.as_of(t) if h else None

    def between(self, key: str, t0: float, t1: float) -> list[dict[str, Any]]:
        h = self.histories.get(key)
        return h.between(t0, t1) if h else []

    def collect(self, req: dict[str, Any]) -> dict[str, Any]:
        snaps = {
            point: {key: self.as_of(key, float(req["points"][point])) for key in keys}
            for point, keys in req.get("topics", {}).items()
            if point in req.get("points", {})
        }
        windows = {w["key"]: self.between(w["key"], float(w["t0"]), float(w["t1"])) for w in req.get("windows", [])}
        return {"snapshots": snaps, "windows": windows}


class CacheServer:
    def __init__(self, cfg: InstanceConfig):
        self.cfg = cfg
        self.store = Store(cfg.cache_max_samples, cfg.cache_max_age)
        self.counts = Counters()
        self.gaps = GapTracker()
        self.applied: dict[str, int] = {}  # listener sender -> last applied seq
        self.parked: list[tuple[float, list[bytes], dict[str, Any]]] = []
        ctx = zmq.Context.instance()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 200000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"sal.")
        self.sub.connect(cfg.endpoints.listener_pub)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(cfg.endpoints.cache_router)
        self.sender = Sender(sender_id("cache", cfg.instrument))

    def on_sample(self, frames: list[bytes]) -> None:
        try:
            msg = decode(frames)
            st = self.gaps.check(msg.envelope)
            if st.gap:
                self.counts["gaps"] += st.gap
                log.warning("gap of %d message(s) from %s", st.gap, msg.envelope.sender)
            if st.duplicate:
                return
            self.applied[msg.envelope.sender] = msg.envelope.seq
            self.store.add(msg.payload)
            self.counts["samples"] += 1
        except (EnvelopeError, ValueError, KeyError, TypeError) as exc:
            self.counts["bad_messages"] += 1
            log.warning("bad message from the listener ignored: %s", exc)

    def caught_up(self, req: dict[str, Any]) -> bool:
        after = req.get("after")
        if not after:
            return True
        return self.applied.get(after.get("sender", ""), 0) >= int(after.get("seq", 0))

    def answer(self, ident: list[bytes], req: dict[str, Any], late: bool = False) -> None:
        op = req.get("op")
        if op == "collect":
            body = self.store.collect(req)
            body["caught_up"] = not late
        elif op == "range":
            body = {"samples": self.store.between(req["key"], float(req["t0"]), float(req["t1"]))}
        elif op == "latest":
            body = {"samples": {k: (self.store.histories[k].samples[-1] if k in self.store.histories else None) for k in req.get("keys", [])}}
        elif op == "status":
            body = {
                "counts": self.counts.as_dict(),
                "topics": {k: len(h.times) for k, h in self.store.histories.items()},
            }
        else:
            body = {"error": f"unknown op {op!r}"}
        self.router.send_multipart(ident + self.sender.frames(f"ctl.reply.{op}", body))

    def on_request(self, frames: list[bytes]) -> None:
        split = frames.index(b"") + 1 if b"" in frames else 1
        ident, rest = frames[:split], frames[split:]
        try:
            req = decode(rest).payload
            if not isinstance(req, dict):
                raise EnvelopeError("request payload is not an object")
        except EnvelopeError as exc:
            self.counts["bad_requests"] += 1
            self.router.send_multipart(ident + self.sender.frames("ctl.reply.error", {"error": str(exc)}))
            return
        try:
            if self.caught_up(req):
                self.answer(ident, req)
            else:
                self.parked.append((time.monotonic() + self.cfg.collect_wait, ident, req))
        except (KeyError, TypeError, ValueError) as exc:
            self.counts["bad_requests"] += 1
            self.router.send_multipart(ident + self.sender.frames("ctl.reply.error", {"error": f"bad request: {exc}"}))

    def release_parked(self) -> None:
        now = time.monotonic()
        keep = []
        for deadline, ident, req in self.parked:
            if self.caught_up(req):
                self.answer(ident, req)
            elif now >= deadline:
                self.counts["late_answers"] += 1
                self.answer(ident, req, late=True)
            else:
                keep.append((deadline, ident, req))
        self.parked = keep

    def run(self, stop: Stop) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        log.info("cache up: SUB %s, ROUTER %s", self.cfg.endpoints.listener_pub, self.cfg.endpoints.cache_router)
        while not stop.requested:
            events = dict(poller.poll(50))
            if self.sub in events:
                for _ in range(5000):
                    try:
                        self.on_sample(self.sub.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if self.router in events:
                while True:
                    try:
                        self.on_request(self.router.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if self.parked:
                self.release_parked()


def main(argv: list[str] | None = None) -> None:
    p = base_parser("hs-cache", __doc__.splitlines()[0])
    args = p.parse_args(argv)
    cfg = setup(args, "hs-cache")
    CacheServer(cfg).run(Stop())


if __name__ == "__main__":
    main()
