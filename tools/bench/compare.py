"""DDS and Kafka side by side: one row per figure, one column per bus.

``hs-bench --bus dds,kafka`` puts :func:`comparison` in its JSON (``comparison``) and prints
:func:`compare_text`. Two single-bus results measured separately merge the same way::

    python -m tools.bench.compare dds.json kafka.json [--json both.json]

Each file's bus is its ``bench.bus`` (a file of ``--bus dds,kafka`` brings both of its buses).
Rows: latency p50/p99 per camera and scenario (alone, overlapping exposures, side by side), the
ingest rate sustained without loss (or the best lossless step in quick runs), the raw floor of the
bus (ddsperf on DDS, the plain confluent-kafka producer/consumer on Kafka) and peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tools.bench.report import scenarios


def _get(d: Any, *keys: str) -> Any:  # noqa: ANN401
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _rows_of(res: dict[str, Any]) -> dict[str, float | None]:
    """(figure label -> value) of one bus's result."""
    out: dict[str, float | None] = {}
    cams = list((res.get("latency") or {}).keys())
    for side in ("ComCam", "LSSTCam"):
        if side in (_get(res, "overlap", "side_by_side") or {}) and side not in cams:
            cams.append(side)
    for cam in cams:
        for label, r in scenarios(res, cam):
            if not isinstance(r, dict) or r.get("status") != "ok":
                continue
            for path, name in (("fast_path", "fast path"), ("announcement", "announcement")):
                for q in ("p50_ms", "p99_ms"):
                    out[f"{cam} {label}: {name} {q[:3]} (ms)"] = _get(r, path, q)
    ing = res.get("ingest") or {}
    if ing.get("status") == "ok":
        out["ingest sustained, no loss (samples/s)"] = ing.get("sustained_per_s") or None
        out["ingest best lossless step (samples/s)"] = ing.get("max_lossless_step_per_s")
    floor = res.get("floor") or {}
    out["bus floor: raw samples/s (ddsperf | plain confluent-kafka)"] = (
        _get(floor, "kafka_raw", "end_to_end_per_s") or _get(ing, "ddsperf", "samples_per_s"))  # fmt: skip
    for cam, m in (res.get("memory") or {}).items():
        if isinstance(m, dict) and "peak_total_mb" in m:
            out[f"memory {cam} (MB)"] = m["peak_total_mb"]
    return out


def comparison(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """[{"figure": label, "<bus>": value, ...}] over every figure any bus has, in first-seen order."""
    per_bus = {bus: _rows_of(res) for bus, res in results.items()}
    labels: list[str] = []
    for rows in per_bus.values():
        labels += [k for k in rows if k not in labels]
    return [{"figure": label, **{bus: rows.get(label) for bus, rows in per_bus.items()}} for label in labels]


def _cell(v: Any) -> str:  # noqa: ANN401
    if isinstance(v, (int, float)):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"
    return "-"


def compare_text(results: dict[str, dict[str, Any]]) -> str:
    rows = comparison(results)
    buses = list(results)
    width = max([len(r["figure"]) for r in rows] + [10])
    lines = [f"  {'':<{width}} " + " ".join(f"{b:>10}" for b in buses)]
    lines += [f"  {r['figure']:<{width}} " + " ".join(f"{_cell(r[b]):>10}" for b in buses) for r in rows]
    return "bus comparison:\n" + "\n".join(lines)


def load(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """bus -> result from hs-bench JSON files (single-bus or ``--bus dds,kafka``)."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if "buses" in data:
            out.update(data["buses"])
        else:
            out[_get(data, "bench", "bus") or "dds"] = data
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="hs-bench --json files (e.g. one on dds, one on kafka)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write {buses, comparison} there")
    args = p.parse_args(argv)
    try:
        results = load(args.files)
    except (OSError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    print(compare_text(results))
    if args.json:
        args.json.write_text(json.dumps({"buses": results, "comparison": comparison(results)}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
