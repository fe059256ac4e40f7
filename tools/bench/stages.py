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
from typing import Any

from header.compose import ExposureInputs, Templates, compose_header
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


def run(instrument: str, exposures: int, profile: str | None = None) -> dict[str, Any]:
    cfg = load_instance(instrument)
    kmap = load_keyword_map(cfg)
    templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
    store = Store(cfg.cache_max_samples, cfg.cache_max_age, cfg.cache_max_topic_mb * 1e6)
    night = Night(bench_scenario(instrument, exposures))
    events: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {k: [] for k in ("precompose", "collect", "compose", "encode", "publisher_file")}
    prof = cProfile.Profile() if profile else None
    samples = 0
    pacer = GcPacer()  # as in the composer: collection between exposures, never inside one
    for e in night.emissions():
        sample = build_sample(e.component, e.topic, e.sal_index, e.fields, private_sndStamp=e.tai)
        raw = salrecord.encode(sample.serialize(), e.sal_index, e.tai, e.tai, None)
        frame = f"sal.{e.component}.{e.topic}".encode()
        store.add(frame, raw)
        samples += 1
        if e.component != cfg.camera or e.topic not in CAMERA_EVENTS:
            continue
        rec = salrecord.decode(e.component, e.topic, raw)
        name = rec["data"].get("imageName")
        ev = events.setdefault(name, {})
        ev[e.topic] = rec
        if e.topic in PRECOMPOSE_AT and "startReadout" in ev and "startIntegration" in ev:
            t0 = time.perf_counter()
            points = collection_points(ev)
            reply = store.collect(collection_request(cfg, kmap, points))
            compose_header(cfg, kmap, templates, ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"]), e.tai, 1).payload_json()
            times["precompose"].append(time.perf_counter() - t0)
        if e.topic == "endOfImageTelemetry":
            if prof:
                prof.enable()
            t0 = time.perf_counter()
            points = collection_points(ev)
            reply = json.loads(json.dumps(store.collect(collection_request(cfg, kmap, points))))  # as over the socket
            t1 = time.perf_counter()
            header = compose_header(cfg, kmap, templates, ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"]), e.tai + 0.01, 1)
            t2 = time.perf_counter()
            body = header.payload_json(composeSeconds=t2 - t1)
            t3 = time.perf_counter()
            header_file(json.loads(body))
            t4 = time.perf_counter()
            if prof:
                prof.disable()
            for k, a, b in (("collect", t0, t1), ("compose", t1, t2), ("encode", t2, t3), ("publisher_file", t3, t4)):
                times[k].append(b - a)
            events.pop(name, None)
            pacer.step(quiet=True)
    if prof and profile:
        prof.dump_stats(profile)
    return {
        "instrument": instrument,
        "exposures": exposures,
        "samples": samples,
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
