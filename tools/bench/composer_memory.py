"""The composer's resident memory, without sockets: ``python -m tools.bench.composer_memory LSSTCam``.

A child process plays a bench night into an in-process cache store and writes what the composer
would be given (camera events and the cache's reply, at each provisional and final composition) as
JSON lines, so the store's memory is not counted. This process then does the composer's work on
them: import, start-up (IERS tables, warm-up composition), the collection and trim its loop starts
with, then every composition, keeping the last ``RECENT_HEADERS`` headers' sensor contexts as the
composer does. It prints the RSS, the peak RSS (``VmHWM``) and the anonymous part after each step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

REPORTED = (1, 2, 5, 20, 50, 100, 200, 500, 1000)  # report after these numbers of final compositions


def status_mb() -> dict[str, int]:
    """VmRSS, VmHWM (peak) and RssAnon of this process, in MB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key] = int(rest.split()[0]) // 1024
    return out


def write_inputs(instrument: str, exposures: int, overlap: bool, path: Path) -> None:
    """Play a bench night; write each composition's inputs as one JSON line."""
    import functools

    import tools.bench.stages as stages
    from procs.composer import collection_points, collection_request

    if overlap:
        stages.bench_scenario = functools.partial(stages.bench_scenario, overlap=True)  # type: ignore[assignment]
    with path.open("w") as fh:
        for bench, stage, name, ev, tai in stages.play(instrument, exposures):
            points = collection_points(ev)
            reply = bench.store.collect(collection_request(bench.cfg, bench.kmap, points))
            line = {"stage": stage, "name": name, "events": ev, "points": points, "tai": tai,
                    "snapshots": reply["snapshots"], "windows": reply["windows"]}  # fmt: skip
            fh.write(json.dumps(line) + "\n")


def measure(instrument: str, path: Path) -> list[dict[str, Any]]:
    """Do the composer's work on the inputs in ``path``; the memory after each step."""
    steps: list[dict[str, Any]] = []

    def step(what: str) -> None:
        steps.append({"step": what, **status_mb()})
        s = steps[-1]
        print(f"{what:32s} RSS {s['VmRSS']:4d} MB  peak {s['VmHWM']:4d} MB  anon {s['RssAnon']:4d} MB", file=sys.stderr)

    step("start")
    from procs.composer import RECENT_HEADERS

    step("import procs.composer")
    from header import astro
    from header.compose import ExposureInputs, Templates, compose_header
    from procs.common import GcPacer
    from protocols.config import load_instance, load_keyword_map, load_template
    from protocols.envelope import tai_now

    cfg = load_instance(instrument)
    kmap = load_keyword_map(cfg)
    templates = Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))
    astro.preload()  # Composer.warm_up
    astro.tai_iso(tai_now())
    compose_header(cfg, kmap, templates, ExposureInputs("WARMUP", {}, {}, {}), tai_now())
    step("start-up (config, IERS, warm-up)")
    pacer = GcPacer()  # what Composer.run starts with
    step("loop started (collected, trimmed)")
    recent: OrderedDict[str, Any] = OrderedDict()
    finals = 0
    with path.open() as fh:
        for line in fh:
            d = json.loads(line)
            inputs = ExposureInputs(d["name"], d["events"], d["points"], d["snapshots"], d["windows"], [])
            if d["stage"] == "precompose":
                compose_header(cfg, kmap, templates, inputs, d["tai"], 1).payload_json()
                continue
            header = compose_header(cfg, kmap, templates, inputs, d["tai"] + 0.01, 1)
            header.payload_json(composeSeconds=0.001, collectSeconds=0.001)
            recent[header.image_name] = header.context
            while len(recent) > RECENT_HEADERS:
                recent.popitem(last=False)
            del header, inputs, d
            pacer.step(quiet=True)
            finals += 1
            if finals in REPORTED:
                step(f"after {finals} compositions")
    return steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("instrument", choices=["LATISS", "ComCam", "LSSTCam"])
    p.add_argument("--exposures", type=int, default=200)
    p.add_argument("--overlap", action="store_true", help="overlapping exposures (as in the bench's scenario)")
    p.add_argument("--write", metavar="FILE", help=argparse.SUPPRESS)  # the child's job
    args = p.parse_args(argv)
    if args.write:
        write_inputs(args.instrument, args.exposures, args.overlap, Path(args.write))
        return
    with tempfile.TemporaryDirectory(prefix="hs-composer-memory-") as tmp:
        path = Path(tmp) / "inputs.jsonl"
        cmd = [sys.executable, "-m", "tools.bench.composer_memory", args.instrument, "--exposures", str(args.exposures),
               "--write", str(path)] + (["--overlap"] if args.overlap else [])  # fmt: skip
        subprocess.run(cmd, check=True)
        steps = measure(args.instrument, path)
    print(json.dumps({"instrument": args.instrument, "exposures": args.exposures, "overlap": args.overlap, "steps": steps}))


if __name__ == "__main__":
    main()
