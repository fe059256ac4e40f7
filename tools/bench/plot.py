"""PNG of the latency distributions (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS_MS = {  # (instrument, path) -> p99 target
    ("LATISS", "fast_path"): 10.0,
    ("LATISS", "announcement"): 10.0,
    ("LSSTCam", "fast_path"): 20.0,
    ("LSSTCam", "announcement"): 50.0,
}
COLORS = {"LATISS": "tab:blue", "ComCam": "tab:green", "LSSTCam": "tab:red"}


def _cdf(ax: Any, values: list[float], label: str, color: str, style: str = "-") -> None:  # noqa: ANN401
    xs = sorted(values)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})", color=color, linestyle=style)


def write_plot(path: Path, series: dict[str, dict[str, list[float]]], floors: dict[str, dict[str, float]],
               ingest: dict[str, Any] | None, title: str) -> None:  # fmt: skip
    """``series``: run label ("LATISS", "LATISS overlap", "LSSTCam side-by-side"...) -> path -> ms values.

    ``floors``: instrument -> {"fast_path": ms, "announcement": ms}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, key, name in ((axes[0][0], "fast_path", "fast path (hdr.* on ZeroMQ)"),
                          (axes[0][1], "announcement", "largeFileObjectAvailable (DDS)")):  # fmt: skip
        drawn = False
        for label, paths in series.items():
            vals = [v for v in paths.get(key, []) if v > 0]
            if not vals:
                continue
            inst = label.split()[0]
            style = "-" if label == inst else ("--" if "overlap" in label else ":")
            _cdf(ax, vals, label, COLORS.get(inst, "black"), style)
            drawn = True
        for (inst, k), target in TARGETS_MS.items():
            if k == key and any(lbl.split()[0] == inst for lbl in series):
                ax.axvline(target, color=COLORS[inst], alpha=0.35, linewidth=3)
                ax.text(target, 0.02, f" {inst} p99 target", rotation=90, color=COLORS[inst], fontsize=8, va="bottom")
        for inst, fl in floors.items():
            if fl.get(key):
                ax.axvline(fl[key], color=COLORS.get(inst, "black"), linestyle="-.", linewidth=1)
                ax.text(fl[key], 0.55, f" {inst} floor", rotation=90, color=COLORS.get(inst, "black"), fontsize=8)
        ax.axhline(0.99, color="grey", linewidth=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("ms after endOfImageTelemetry was written")
        ax.set_ylabel("fraction of exposures")
        ax.set_title(f"endOfImageTelemetry -> {name}")
        ax.grid(True, which="both", alpha=0.3)
        if drawn:
            ax.legend(fontsize=8, loc="lower right")

    ax = axes[1][0]
    labels, data = [], []
    for label, paths in series.items():
        for key, short in (("fast_path", "fast"), ("announcement", "LFO")):
            vals = [v for v in paths.get(key, []) if v > 0]
            if vals:
                labels.append(f"{label}\n{short}")
                data.append(vals)
    if data:
        ax.boxplot(data, whis=(1, 99), showfliers=True, vert=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=45, ha="right")
        ax.set_yscale("log")
    ax.set_ylabel("ms (whiskers p1-p99)")
    ax.set_title("latency per run and path")
    ax.grid(True, axis="y", which="both", alpha=0.3)

    ax = axes[1][1]
    steps = (ingest or {}).get("steps") or []
    if steps:
        xs = list(range(len(steps)))
        ax.bar([x - 0.2 for x in xs], [s["achieved_per_s"] for s in steps], 0.4, label="written (achieved)")
        ax.bar([x + 0.2 for x in xs], [s["received"] / s["seconds"] for s in steps], 0.4, label="received by the cache")
        for x, s in zip(xs, steps):
            ax.text(x, s["achieved_per_s"], f"lost {s['lost']}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(xs, [f"{s['requested_per_s']:.0f}/s" for s in steps])
        ax.axhline(20000, color="black", linestyle="--", linewidth=1, label="target 20,000/s")
        ax.legend(fontsize=8)
    ax.set_title("ingest: ESS:301 temperature samples/s (requested steps)")
    ax.set_ylabel("samples/s")
    ax.grid(True, axis="y", alpha=0.3)

    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
