"""hs-composer: follows the camera's events and composes each image's header.

SUBscribes to the listener's camera events. An exposure opens at startIntegration; at
endOfImageTelemetry (or when it is late beyond the deadline) the composer asks the cache for the
snapshots as of each collection point's own event time, composes the header (pure code in
:mod:`header.compose`), PUSHes it to the publisher and PUBlishes it on the fast path
(``hdr.<instrument>.<imageName>``). Overlapping exposures are independent entries.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from header import astro
from header.compose import CAMERA_EVENTS, ExposureInputs, Templates, compose_header
from procs.common import Counters, Stop, base_parser, setup
from protocols.config import InstanceConfig, KeywordMap, load_keyword_map, load_template
from protocols.envelope import EnvelopeError, GapTracker, Sender, decode, sender_id, tai_now
from protocols.messages import CacheClient, CacheUnavailable, topic_key

log = logging.getLogger("composer")
RECENT_HEADERS = 20  # headers kept in memory to answer per-sensor requests


@dataclass
class OpenExposure:
    image_name: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_seq: tuple[str, int] = ("", 0)
    opened: float = field(default_factory=time.monotonic)
    deadline_tai: float | None = None
    deadline_wall: float | None = None


def collection_request(cfg: InstanceConfig, kmap: KeywordMap, points: dict[str, float]) -> dict[str, Any]:
    """The cache request for one header: topic keys per collection point, monitor windows."""
    topics: dict[str, set[str]] = {p: set() for p in points}
    topics.setdefault("start", set()).add(topic_key(cfg.camera, "focalPlaneSummaryInfo"))
    windows = []
    for src in kmap.keywords:
        if src.component == cfg.camera and src.topic in CAMERA_EVENTS:
            continue
        point = src.when if src.when in points else "start"
        topics.setdefault(point, set()).add(src.topic_key)
        if src.monitor and "start" in points:
            windows.append({"key": src.topic_key, "t0": points["start"], "t1": points.get("end", points["start"])})
    return {"op": "collect", "points": points, "topics": {p: sorted(k) for p, k in topics.items()}, "windows": windows}


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
        self.done: dict[str, int] = {}  # imageName -> version announced
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
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(cfg.endpoints.composer_pub)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(cfg.endpoints.composer_router)
        self.recent: OrderedDict[str, Any] = OrderedDict()  # imageName -> SensorContext (per-sensor requests)
        self.sender = Sender(sender_id("composer", cfg.instrument))
        self.fast_sender = Sender(self.sender.sender)
        self.cache = CacheClient(cfg.endpoints.cache_router, Sender(self.sender.sender + "/req"), timeout_s=5.0)
        self.warm_up()

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
        st = self.gaps.check(msg.envelope)
        if st.gap:
            self.counts["gaps"] += st.gap
            log.warning("missed %d listener message(s); the cache fills in the exposures' events", st.gap)
        if st.duplicate:
            return
        sample = msg.payload
        topic = sample.get("topic") if isinstance(sample, dict) else None
        if topic not in CAMERA_EVENTS:
            return
        name = sample.get("data", {}).get("imageName")
        if not isinstance(name, str) or not name:
            self.counts["events_without_image"] += 1
            log.warning("%s without an imageName ignored", topic)
            return
        if name in self.done and topic != "endOfImageTelemetry":
            self.counts["events_after_done"] += 1
            return
        exp = self.open.setdefault(name, OpenExposure(name))
        if topic in exp.events:
            self.counts["duplicate_events"] += 1
            log.warning("duplicate %s for %s ignored", topic, name)
            return
        exp.events[topic] = sample
        exp.last_seq = (msg.envelope.sender, msg.envelope.seq)
        if isinstance(sample.get("sndStamp"), (int, float)):
            self.bus_time = max(self.bus_time, float(sample["sndStamp"]))
        if topic == "startIntegration":
            d = sample["data"]
            timeout = float(d.get("timeout") or 0) or float(d.get("exposureTime") or 0) + 30.0
            exp.deadline_tai = sample["sndStamp"] + timeout + self.cfg.end_deadline
            exp.deadline_wall = time.monotonic() + timeout + self.cfg.end_deadline
            log.info("exposure %s started (%.1f s)", name, float(d.get("exposureTime") or 0))
        if topic == "endOfImageTelemetry":
            if name in self.done:
                self.counts["duplicate_events"] += 1
                log.warning("endOfImageTelemetry for %s, already composed: ignored", name)
                self.open.pop(name, None)
                return
            self.finish(exp, reasons=[])

    def fill_missing_events(self, exp: OpenExposure, points: dict[str, float]) -> None:
        """Events this process missed (restart, gap) are looked up in the cache's history."""
        t1 = max(points.values()) if points else tai_now()
        for topic in ("startIntegration", "startReadout", "endReadout", "imageReadoutParameters"):
            if topic in exp.events:
                continue
            try:
                reply = self.cache.request({"op": "range", "key": topic_key(self.cfg.camera, topic), "t0": t1 - 4 * 3600, "t1": t1})
            except CacheUnavailable:
                return
            for s in reversed(reply.get("samples", [])):
                if s.get("data", {}).get("imageName") == exp.image_name:
                    exp.events[topic] = s
                    break

    def finish(self, exp: OpenExposure, reasons: list[str]) -> None:
        points = collection_points(exp.events)
        self.fill_missing_events(exp, points)
        points = collection_points(exp.events)
        if "endOfImageTelemetry" not in exp.events and not reasons:
            reasons = ["endOfImageTelemetry not received"]
        req = collection_request(self.cfg, self.kmap, points)
        if exp.last_seq[0]:
            req["after"] = {"sender": exp.last_seq[0], "seq": exp.last_seq[1]}
        try:
            reply = self.cache.request(req)
            snapshots, windows = reply.get("snapshots", {}), reply.get("windows", {})
            if not reply.get("caught_up", True):
                log.warning("cache answered for %s before catching up with the listener", exp.image_name)
        except CacheUnavailable as exc:
            log.error("%s: %s; header written from the camera events alone", exp.image_name, exc)
            snapshots, windows = {}, {}
            reasons = reasons + [f"telemetry unavailable: {exc}"]
            self.counts["cache_unavailable"] += 1
        inputs = ExposureInputs(exp.image_name, exp.events, points, snapshots, windows, reasons)
        version = self.done.get(exp.image_name, 0) + 1
        t0 = time.perf_counter()
        header = compose_header(self.cfg, self.kmap, self.templates, inputs, tai_now(), version)
        payload = header.to_payload()
        payload["composeSeconds"] = time.perf_counter() - t0
        topic = f"hdr.{self.cfg.instrument}.{exp.image_name}"
        self.pub.send_multipart(self.fast_sender.frames(topic, payload))
        self.push.send_multipart(self.sender.frames(topic, payload))
        self.done[exp.image_name] = version
        self.recent[exp.image_name] = header.context
        while len(self.recent) > RECENT_HEADERS:
            self.recent.popitem(last=False)
        self.open.pop(exp.image_name, None)
        self.counts["headers" if header.complete else "headers_incomplete"] += 1
        self.report_bad_values(header.image_name, header.provenance)
        log.info(
            "%s composed v%d (%s, %d HDUs) in %.1f ms",
            exp.image_name,
            version,
            "complete" if header.complete else "INCOMPLETE: " + "; ".join(header.reasons),
            len(header.hdus),
            payload["composeSeconds"] * 1000,
        )

    def on_request(self, frames: list[bytes]) -> None:
        """Per-sensor header requests: ``{op: sensor, imageName, sensor}`` on the ROUTER socket."""
        split = frames.index(b"") + 1 if b"" in frames else 1
        ident, rest = frames[:split], frames[split:]
        try:
            req = decode(rest).payload
            image, sensor = req["imageName"], req["sensor"]
            ctx = self.recent.get(image)
            if ctx is None:
                raise KeyError(f"{image} is not among the last {RECENT_HEADERS} headers composed")
            body = ctx.sensor_header(sensor)
            body["imageName"] = image
            body["version"] = self.done.get(image, 1)
        except (EnvelopeError, KeyError, TypeError) as exc:
            self.counts["bad_requests"] += 1
            body = {"error": str(exc).strip('"')}
        self.router.send_multipart(ident + self.fast_sender.frames(f"hdr.{self.cfg.instrument}.sensor", body))

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
            self.fast_sender.frames(
                f"ctl.status.composer.{self.cfg.instrument}",
                {"counts": self.counts.as_dict(), "open": sorted(self.open), "composed": len(self.done)},
            )
        )

    def check_deadlines(self) -> None:
        """An exposure is late when either the bus's event time or the wall clock passes its deadline."""
        now = time.monotonic()
        for exp in list(self.open.values()):
            late_bus = exp.deadline_tai is not None and self.bus_time > exp.deadline_tai
            late_wall = exp.deadline_wall is not None and now > exp.deadline_wall
            if late_bus or late_wall:
                log.warning("%s: endOfImageTelemetry is late beyond the deadline: writing incomplete", exp.image_name)
                self.counts["late"] += 1
                self.finish(exp, reasons=["endOfImageTelemetry late beyond the deadline"])

    def run(self, stop: Stop) -> None:
        log.info("composer up for %s: events from %s", self.cfg.instrument, self.cfg.endpoints.listener_pub)
        last_check = time.monotonic()
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        while not stop.requested:
            events = dict(poller.poll(100))
            if self.sub in events:
                while True:
                    try:
                        self.on_event(self.sub.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if self.router in events:
                while True:
                    try:
                        self.on_request(self.router.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                self.check_deadlines()
                self.publish_status()


def main(argv: list[str] | None = None) -> None:
    p = base_parser("hs-composer", __doc__.splitlines()[0])
    args = p.parse_args(argv)
    cfg = setup(args, "hs-composer")
    Composer(cfg).run(Stop())


if __name__ == "__main__":
    main()
