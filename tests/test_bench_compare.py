"""hs-bench's bus comparison: DDS and Kafka results side by side, from one run or two JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.bench import compare


def result(bus: str, fast99: float, ingest: float, raw: dict[str, Any]) -> dict[str, Any]:
    lat = {"status": "ok", "fast_path": {"p50_ms": fast99 / 2, "p99_ms": fast99}, "announcement": {"p50_ms": 1.0, "p99_ms": 2.0}}
    side = {"status": "ok", "ComCam": lat, "LSSTCam": {"status": "failed", "reason": "x"}}
    return {"bench": {"bus": bus}, "latency": {"LATISS": lat, "ComCam": lat}, "overlap": {"overlapping_exposures": {}, "side_by_side": side},
            "ingest": {"status": "ok", "sustained_per_s": 0.0, "max_lossless_step_per_s": ingest, **raw.get("ingest", {})},
            "floor": raw.get("floor", {}), "memory": {"LATISS": {"peak_total_mb": 300.0}}}


DDS = result("dds", 7.0, 24000.0, {"ingest": {"ddsperf": {"samples_per_s": 1_100_000}}})
KAFKA = result("kafka", 40.0, 2400.0, {"floor": {"kafka_raw": {"end_to_end_per_s": 7700}}})


def test_rows_put_each_figure_of_each_bus_in_its_column() -> None:
    rows = {r["figure"]: r for r in compare.comparison({"dds": DDS, "kafka": KAFKA})}
    assert rows["LATISS alone: fast path p99 (ms)"] == {"figure": "LATISS alone: fast path p99 (ms)", "dds": 7.0, "kafka": 40.0}
    assert rows["ComCam beside LSSTCam: fast path p99 (ms)"]["kafka"] == 40.0
    assert not any(r.startswith("LSSTCam beside") for r in rows)  # a failed scenario has no figure
    assert rows["ingest best lossless step (samples/s)"] == {"figure": "ingest best lossless step (samples/s)", "dds": 24000.0, "kafka": 2400.0}
    assert rows["ingest sustained, no loss (samples/s)"]["dds"] is None  # quick runs sustain nothing
    raw = rows["bus floor: raw samples/s (ddsperf | plain confluent-kafka)"]
    assert raw["dds"] == 1_100_000 and raw["kafka"] == 7700
    text = compare.compare_text({"dds": DDS, "kafka": KAFKA})
    assert "LATISS alone: fast path p99 (ms)" in text and "40.0" in text and "7,700" in text


def test_two_json_files_merge_by_their_bus(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "a.json").write_text(json.dumps(DDS))
    (tmp_path / "b.json").write_text(json.dumps(KAFKA))
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", str(tmp_path / "both.json")]) == 0
    both = json.loads((tmp_path / "both.json").read_text())
    assert set(both["buses"]) == {"dds", "kafka"}
    assert compare.load([tmp_path / "both.json"]).keys() == {"dds", "kafka"}  # a --bus dds,kafka file reads back
    assert "kafka" in capsys.readouterr().out
    assert compare.main([str(tmp_path / "missing.json")]) == 2
