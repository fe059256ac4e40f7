"""hs-bench --quick runs end to end: every section of its JSON holds numbers and the plot is written.

No timing is asserted: the figures depend on the machine; the targets are reported, not tested.
"""

from __future__ import annotations

import json
import numbers
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _bench_exe() -> list[str]:
    exe = Path(sys.executable).parent / "hs-bench"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.bench.main"]


def _number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@pytest.mark.timeout(300)
def test_bench_quick(tmp_path: Path) -> None:
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    # Domains 150..199, ports apart from the other tests' (offsets 20000..22780) and below the
    # kernel's ephemeral range (32768..), where another test's client socket could hold one.
    slot = os.getpid() % 5
    env = dict(os.environ, HS_BENCH_DOMAIN=str(150 + 10 * slot), HS_BENCH_PORT_OFFSET=str(23000 + 600 * slot))
    proc = subprocess.run([*_bench_exe(), "--quick", "--json", str(out), "--plot", str(plot)],
                          capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, f"hs-bench --quick failed:\n{proc.stderr[-4000:]}"
    res = json.loads(out.read_text())

    lat = res["latency"]["LATISS"]
    assert lat["status"] == "ok", lat
    for path in ("fast_path", "announcement"):
        for k in ("p50_ms", "p99_ms", "max_ms"):
            assert _number(lat[path][k]) and lat[path][k] > 0, (path, k, lat[path])
        assert lat[path]["n"] == lat["exposures"] > 0

    fl = res["floor"]
    assert _number(fl["zmq_hop_event"]["p50_ms"])
    assert _number(fl["fitsio_write_md5"]["LATISS"]["p50_ms"])
    assert _number(fl["dds_hop_python"]["p50_ms"])
    per = fl["per_camera"]["LATISS"]
    for k in ("fast_path_ms", "announcement_ms", "fast_path_ratio_p50", "announcement_ratio_p50"):
        assert _number(per[k]), (k, per)

    ing = res["ingest"]
    assert ing["status"] == "ok", ing
    assert ing["steps"] and all(_number(s["achieved_per_s"]) and _number(s["lost"]) for s in ing["steps"])
    assert _number(ing["max_lossless_step_per_s"])

    mem = res["memory"]["LATISS"]
    assert _number(mem["peak_total_mb"]) and mem["peak_total_mb"] > 0
    assert all(_number(v) and v > 0 for v in mem["peak_rss_mb"].values())
    assert mem["cpu_s"]["composer"] > 0 and all(_number(v) and v >= 0 for v in mem["waited_for_cpu_s"].values())
    assert 0 < mem["machine_busy_pct"] <= 100
    assert "s waiting for a CPU" in proc.stderr

    assert res["overlap"]["overlapping_exposures"]["LATISS"]["status"] == "ok"
    assert {t["status"] for t in res["targets"]} <= {"met", "not met", "not measured"}
    assert plot.exists() and plot.stat().st_size > 0
    assert "hs-bench:" in proc.stderr
