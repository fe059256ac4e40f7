"""The bench's figures, without running a bench: medians of repeated runs, tails traced to a stage,
targets checked in every scenario."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tools.bench.latency import NightResult
from tools.bench.repeat import fold
from tools.bench.report import evaluate


def _run(p99: float, mem: float, load: float) -> dict[str, Any]:
    lat = {"status": "ok", "exposures": 200, "fast_path": {"n": 200, "p50_ms": p99 / 2, "p99_ms": p99 / 2 + 1},
           "announcement": {"n": 200, "p50_ms": p99 / 2, "p99_ms": p99}, "tail": {"x": [1]}}
    return {"bench": {"host": {"loadavg": [load]}, "wall_s": 10.0}, "latency": {"LSSTCam": lat},
            "overlap": {"overlapping_exposures": {}, "side_by_side": None}, "floor": {}, "ingest": {},
            "memory": {"LSSTCam": {"peak_total_mb": mem, "label": f"run at {load}"}}}


def test_repeated_runs_fold_to_their_median_with_spread() -> None:
    res, spread = fold([_run(30.0, 260.0, 0.5), _run(10.0, 240.0, 0.4), _run(18.0, 300.0, 0.9)])
    assert res["latency"]["LSSTCam"]["announcement"]["p99_ms"] == 18.0
    assert res["memory"]["LSSTCam"]["peak_total_mb"] == 260.0
    assert spread["latency.LSSTCam.announcement.p99_ms"] == [10.0, 30.0]
    assert spread["memory.LSSTCam.peak_total_mb"] == [240.0, 300.0]
    assert res["memory"]["LSSTCam"]["label"] == "run at 0.5"  # text is the first run's
    assert res["latency"]["LSSTCam"]["tail"] == {"x": [1]}  # per-run detail is not folded
    assert "bench.wall_s" not in spread


def test_targets_are_checked_in_every_scenario_of_a_camera() -> None:
    res = _run(18.0, 240.0, 0.5)
    over = {"status": "ok", "fast_path": {"n": 30, "p99_ms": 9.0}, "announcement": {"n": 30, "p99_ms": 25.0}}
    res["overlap"]["overlapping_exposures"]["LSSTCam"] = over
    by_name = {t["target"]: t for t in evaluate(res)}
    alone = by_name["LSSTCam endOfImageTelemetry -> largeFileObjectAvailable p99 <= 20 ms, alone"]
    overlapping = by_name["LSSTCam endOfImageTelemetry -> largeFileObjectAvailable p99 <= 20 ms, overlapping exposures"]
    assert (alone["status"], overlapping["status"]) == ("met", "not met")
    assert by_name["whole LSSTCam instance <= 250 MB RSS"]["status"] == "met"
    assert by_name["LATISS endOfImageTelemetry -> largeFileObjectAvailable p99 <= 8 ms, alone"]["status"] == "not measured"


def _night(camera: str, prefix: str, t0: float, arrivals: Callable[[int, float], tuple[dict[str, Any], float]]) -> NightResult:
    """100 exposures whose endOfImageTelemetry is written at ``t0 + k`` s; ``arrivals(k, t)`` gives
    exposure k's fast-path record and the time its announcement arrived."""
    eoit, fast, lfo = {}, {}, {}
    for k in range(100):
        name = f"{prefix}_O_20261203_{k:06d}"
        eoit[name] = t = t0 + k
        fast[name], announced = arrivals(k, t)
        lfo[name] = {"t": announced}
    return NightResult(camera, "main", eoit, fast, lfo, 1.0, 0, 1.0, 10.0, 0.0)


def test_a_tail_exposure_names_the_stage_that_grew() -> None:
    def arrivals(k: int, t: float) -> tuple[dict[str, Any], float]:
        slow_publish = 0.040 if k == 7 else 0.0
        return {"t": t + 0.006, "sent": t + 0.005, "compose_s": 0.003}, t + 0.012 + slow_publish

    night = _night("LSSTCam", "MC", 1000.0, arrivals)
    tail = night.tail("announcement")
    worst = tail["images"][0]
    assert worst["image"] == "MC_O_20261203_000007"
    assert worst["grew_most"] == "publisher_write_and_announce"
    assert abs(worst["grew_by_ms"] - 40.0) < 0.5
    assert abs(worst["stages_ms"]["compose"] - 3.0) < 1e-6


def test_counts_stay_integers_when_folded() -> None:
    res, _ = fold([{"n": 8, "x": 1.5}, {"n": 8, "x": 2.5}])
    assert res == {"n": 8, "x": 2.0} and isinstance(res["n"], int)


def test_a_tail_inside_before_compose_is_traced_to_its_part() -> None:
    from protocols.timescale import tai_minus_utc

    def tai_from_utc(t: float) -> float:
        return t + tai_minus_utc(t)

    def arrivals(k: int, t: float) -> tuple[dict[str, Any], float]:
        slow_collect = 0.030 if k == 42 else 0.0
        sent = t + 0.004 + slow_collect
        return ({"t": sent + 0.0005, "sent": sent, "compose_s": 0.001, "collect_s": 0.001 + slow_collect,
                 "listener_tai": tai_from_utc(t + 0.0005), "composer_tai": tai_from_utc(t + 0.001)}, sent + 0.002)  # fmt: skip

    night = _night("LATISS", "AT", 1.8e9, arrivals)
    worst = night.tail("announcement")["images"][0]
    assert worst["image"] == "AT_O_20261203_000042" and worst["grew_most"] == "collect"
    st = worst["stages_ms"]
    parts = st["bus_to_listener"] + st["listener_to_composer"] + st["composer_before_collect"] + st["collect"]
    assert abs(parts - st["before_compose"]) < 0.05 and abs(st["bus_to_listener"] - 0.5) < 0.05
    assert abs(st["composer_before_collect"] - 1.0) < 0.05
    assert night.stages()["collect"]["n"] == 100


def test_a_process_cpu_and_its_wait_for_a_cpu_are_read_from_all_its_threads() -> None:
    import subprocess
    import sys
    import time

    from tools.bench.memory import sched_seconds

    code = "import threading, time\n" \
           "def spin():\n    t = time.process_time() + 0.3\n    while time.process_time() < t: pass\n    time.sleep(30)\n" \
           "th = threading.Thread(target=spin); th.start(); th.join()\n"  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        got = sched_seconds(child.pid)
        while (got is None or got[0] < 0.3) and time.monotonic() < deadline:
            time.sleep(0.1)
            got = sched_seconds(child.pid)
        assert got is not None and got[0] >= 0.3 and got[1] >= 0.0  # the spinning thread's CPU is counted
    finally:
        child.kill()
        child.wait()
    assert sched_seconds(child.pid) is None
