"""Where one header's CPU time goes, without sockets: ``python -m tools.bench.stages LSSTCam``.

Plays a bench night into an in-process cache store (the SAL records the listener would send), and
for every exposure does what the composer and the publisher do with it: the provisional composition
at startReadout, then at endOfImageTelemetry the cache's collect, the composition, the payload's
encoding, and the publisher's decoding and file bytes with MD5. Prints p50/p99 per stage in ms, and
with ``--profile FILE`` writes a cProfile of the endOfImageTelemetry work.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

from header.compose import ComposedHeader, ExposureInputs, Templates, compose_header
from procs.cache import Store
from procs.common import GcPacer
from procs.composer import CAMERA_EVENTS, PRECOMPOSE_AT, collection_points, collection_request
from procs.publisher import header_file
from protocols import salrecord
from protocols.config import load_instance, load_keyword_map, load_template
from protocols.messages import topic_key
from tools.bench.scenarios import bench_scenario
from tools.bench.stats import ms_summary
from tools.sim.night import Night
from tools.sim.player import build_sample


@dataclass
class BenchNight:
    """One instance's configuration and the cache store a bench night is played into."""

    cfg: Any
    kmap: Any
    templates: Templates
    store: Store
    samples: int = 0  # bus samples played so far


def play(instrument: str, exposures: int) -> Iterator[tuple[BenchNight, str, str, dict[str, Any], float]]:
    """Play a bench night into an in-process cache store; yield ``(night, stage, imageName, camera
    events, TAI)`` where the composer would work: ``precompose`` (startReadout with
    startIntegration, or a later readout parameter event) and ``end`` (endOfImageTelemetry)."""
    cfg = load_instance(instrument)
    kmap = load_keyword_map(cfg)
    templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
    bench = BenchNight(cfg, kmap, templates, Store(cfg.cache_max_samples, cfg.cache_max_age))  # no disk: the night in memory
    events: dict[str, dict[str, Any]] = {}
    for e in Night(bench_scenario(instrument, exposures)).emissions():
        sample = build_sample(e.component, e.topic, e.sal_index, e.fields, private_sndStamp=e.tai)
        raw = salrecord.encode(sample.serialize(), e.sal_index, e.tai, e.tai, None)
        bench.store.add(f"sal.{e.component}.{e.topic}".encode(), raw)
        bench.samples += 1
        if e.component != cfg.camera or e.topic not in CAMERA_EVENTS:
            continue
        rec = salrecord.decode(e.component, e.topic, raw)
        name = rec["data"].get("imageName")
        ev = events.setdefault(name, {})
        ev[e.topic] = rec
        if e.topic in PRECOMPOSE_AT and "startReadout" in ev and "startIntegration" in ev:
            yield bench, "precompose", name, ev, e.tai
        if e.topic == "endOfImageTelemetry":
            yield bench, "end", name, ev, e.tai
            events.pop(name, None)


def composed_headers(instrument: str, exposures: int) -> Iterator[ComposedHeader]:
    """The final header of every exposure of a bench night, composed as the composer does it
    (the cache's reply round-tripped through JSON as over the socket), without sockets."""
    for bench, stage, name, ev, tai in play(instrument, exposures):
        if stage != "end":
            continue
        points = collection_points(ev)
        reply = json.loads(json.dumps(bench.store.collect(collection_request(bench.cfg, bench.kmap, points))))
        inputs = ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"])
        yield compose_header(bench.cfg, bench.kmap, bench.templates, inputs, tai + 0.01, 1)


def run(instrument: str, exposures: int, profile: str | None = None) -> dict[str, Any]:
    times: dict[str, list[float]] = {k: [] for k in ("precompose", "collect", "compose", "encode", "publisher_file")}
    prof = cProfile.Profile() if profile else None
    pacer = GcPacer()  # as in the composer: collection between exposures, never inside one
    bench = None
    for bench, stage, name, ev, tai in play(instrument, exposures):
        cfg, kmap, templates, store = bench.cfg, bench.kmap, bench.templates, bench.store
        if stage == "precompose":
            t0 = time.perf_counter()
            points = collection_points(ev)
            reply = store.collect(collection_request(cfg, kmap, points))
            compose_header(cfg, kmap, templates, ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"]), tai, 1).payload_json()
            times["precompose"].append(time.perf_counter() - t0)
            continue
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        points = collection_points(ev)
        reply = json.loads(json.dumps(store.collect(collection_request(cfg, kmap, points))))  # as over the socket
        t1 = time.perf_counter()
        header = compose_header(cfg, kmap, templates, ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"]), tai + 0.01, 1)
        t2 = time.perf_counter()
        body = header.payload_json(composeSeconds=t2 - t1)
        t3 = time.perf_counter()
        header_file(json.loads(body))
        t4 = time.perf_counter()
        if prof:
            prof.disable()
        for k, a, b in (("collect", t0, t1), ("compose", t1, t2), ("encode", t2, t3), ("publisher_file", t3, t4)):
            times[k].append(b - a)
        pacer.step(quiet=True)
    if prof and profile:
        prof.dump_stats(profile)
    return {
        "instrument": instrument,
        "exposures": exposures,
        "samples": bench.samples if bench is not None else 0,
        "stages_ms": {k: ms_summary([v * 1000.0 for v in vs]) for k, vs in times.items()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("instrument", choices=["LATISS", "ComCam", "LSSTCam"])
    p.add_argument("--exposures", type=int, default=20)
    p.add_argument("--profile", metavar="FILE", help="cProfile of the endOfImageTelemetry work")
    args = p.parse_args(argv)
    out = run(args.instrument, args.exposures, args.profile)
    for k, v in out["stages_ms"].items():
        print(f"{k:16s} p50 {v.get('p50_ms')} p99 {v.get('p99_ms')} max {v.get('max_ms')} ms (n={v.get('n')})", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
