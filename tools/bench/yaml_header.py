"""YAML header encoding speed per camera, without sockets: ``python -m tools.bench.yaml_header``.

Composes a bench night's headers (tools.bench.stages) and times, per header, the direct emitter of
header/yamlheader.py (as the publisher would call it), PyYAML's ``yaml.dump`` of the same records with
the C and the pure-Python dumper (what the previous service called), and reading the YAML back.
Prints p50/p99 in ms; no assertion on the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

import yaml

from header.yamlheader import NOT_CARRIED, cards_to_records, decode_yaml, encode_yaml, yaml_extname
from tools.bench.stages import composed_headers
from tools.bench.stats import ms_summary


def _records(hdus: list[list[str]], names: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {
        yaml_extname(n): [{"keyword": c.keyword or None, "value": c.value, "comment": c.comment}
                          for c in cards_to_records(cards) if c.keyword not in NOT_CARRIED]
        for n, cards in zip(names, hdus)
    }


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def run(instrument: str, exposures: int, pyyaml: bool) -> dict[str, Any]:
    times: dict[str, list[float]] = {"encode_yaml": [], "decode_yaml": []}
    if pyyaml:
        times.update({"pyyaml_cdumper": [], "pyyaml_dumper": []})
    size = 0
    for header in composed_headers(instrument, exposures):
        hdus, names = header.hdus, header.hdu_names
        times["encode_yaml"].append(_timed(lambda: encode_yaml(hdus, names)))
        text = encode_yaml(hdus, names)
        size = len(text)
        times["decode_yaml"].append(_timed(lambda: decode_yaml(text)))
        if pyyaml:
            doc = _records(hdus, names)
            cd = getattr(yaml, "CDumper", yaml.Dumper)
            times["pyyaml_cdumper"].append(_timed(lambda: yaml.dump(doc, Dumper=cd, default_flow_style=False, sort_keys=False)))
            times["pyyaml_dumper"].append(_timed(lambda: yaml.dump(doc, default_flow_style=False, sort_keys=False)))
    return {"instrument": instrument, "exposures": exposures, "yaml_bytes": size,
            "ms": {k: ms_summary(v) for k, v in times.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("instruments", nargs="*", default=["LATISS", "ComCam", "LSSTCam"])
    p.add_argument("--exposures", type=int, default=10)
    p.add_argument("--no-pyyaml", action="store_true", help="skip the yaml.dump comparison (slow for LSSTCam)")
    args = p.parse_args(argv)
    for instrument in args.instruments:
        out = run(instrument, args.exposures, not args.no_pyyaml)
        for k, v in out["ms"].items():
            print(f"{instrument:8s} {k:15s} p50 {v.get('p50_ms')} p99 {v.get('p99_ms')} max {v.get('max_ms')} ms "
                  f"(n={v.get('n')}, {out['yaml_bytes']} bytes)", file=sys.stderr)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
