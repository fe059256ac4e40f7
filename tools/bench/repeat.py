"""Several whole bench runs folded into one result: each figure the median of the runs, with its spread.

One good run is not the service's speed: ``hs-bench --repeat N`` runs everything N times and reports
every number found at the same place in every run as the median of the runs, and the headline
figures (latency percentiles, ingest, memory, floor ratios) with their min-max spread.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

#: Leaf names whose spread is reported (the headline figures).
HEADLINE = ("p50_ms", "p99_ms", "max_ms", "achieved_per_s", "sustained_per_s", "peak_total_mb",
            "announcement_ratio_p50", "announcement_ratio_p99", "fast_path_ratio_p50", "fast_path_ratio_p99")  # fmt: skip
SKIP = ("bench", "targets", "tail", "steps", "sustain_runs")  # per-run detail, kept from each run as is


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fold(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The median result of ``runs`` (the first run's shape) and, per headline path, [min, max]."""
    spread: dict[str, list[float]] = {}

    def walk(nodes: list[Any], path: str) -> Any:  # noqa: ANN401
        first = nodes[0]
        if all(isinstance(n, dict) for n in nodes):
            out = dict(first)
            for k in first:
                if k in SKIP or not all(k in n for n in nodes):
                    continue
                out[k] = walk([n[k] for n in nodes], f"{path}.{k}" if path else k)
            return out
        if all(_number(n) for n in nodes):
            if path.rsplit(".", 1)[-1] in HEADLINE:
                spread[path] = [min(nodes), max(nodes)]
            med = statistics.median(nodes)
            if all(isinstance(n, int) for n in nodes) and float(med).is_integer():
                return int(med)
            return round(med, 3)
        return copy.deepcopy(first)

    return walk(runs, ""), spread


def spread_text(spread: dict[str, list[float]], runs: int) -> str:
    """The spread of the p99 latencies, ingest and memory, one line each."""
    lines = [f"  spread over {runs} runs (min-max; the table above shows the medians):"]
    for path, (lo, hi) in spread.items():
        if path.endswith((".fast_path.p99_ms", ".announcement.p99_ms", "sustained_per_s", "peak_total_mb", "announcement_ratio_p99")):
            lines.append(f"    {path}: {lo:g} - {hi:g}")
    return "\n".join(lines)
