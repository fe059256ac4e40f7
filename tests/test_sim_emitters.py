"""The simulator's output is fixed: every camera's scenarios give the same samples, bit for bit.

Digests of the planned nights (every emission: time, component, index, topic and field values, in
order) were computed before the per-telescope event emitters replaced the branches in ``Night``;
``tests/data/sim_golden.json`` holds them. A change to what hs-sim publishes must update that file
on purpose (``python -m tests.test_sim_emitters`` rewrites it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tools.bench.scenarios import bench_scenario
from tools.sim.night import Emission, Night
from tools.sim.scenario import Scenario, default_scenario, scenario_from_dict, tai_iso

GOLDEN = Path(__file__).parent / "data" / "sim_golden.json"
T0 = "2026-11-25T03:04:06.457"


def _t0() -> float:
    return scenario_from_dict({"instrument": "LATISS", "exposures": [{"start": T0, "exptime": 1}]}).exposures[0].tai_start


def _exp(start: float, **kw: Any) -> dict[str, Any]:
    return {"start": tai_iso(start), **kw}


def _overlapping_latiss() -> Scenario:
    t = _t0()
    return scenario_from_dict(
        {
            "instrument": "LATISS",
            "seed": 3,
            "background": {"mount_hz": 5},
            "exposures": [
                _exp(t, exptime=4.0, ra=30.0, dec=-30.0, rotpa=10.0, filter="SDSSr_65mm", object="A"),
                _exp(t + 5.0, exptime=3.0, omit=["ATPtg.currentTargetStatus", "ATCamera.endOfImageTelemetry"]),
                _exp(t + 9.0, exptime=2.0, ra=35.0, dec=-40.0, filter="SDSSg_65mm", disperser="ronchi170lpmm", object="B"),
            ],
        }
    )


def _latiss_changes() -> Scenario:
    t = _t0()
    changes = {"ATDome.position.azimuthPosition": 123.0, "ATDomeTrajectory.telescopeVignetted.vignetted": 3}
    return scenario_from_dict(
        {
            "instrument": "LATISS",
            "background": {"mount_hz": 2},
            "exposures": [_exp(t, exptime=10.0, ra=40.0, dec=-30.0, changes=changes)],
        }
    )


def _maintel(instrument: str) -> Callable[[], Scenario]:
    """Calibrations before the first pointed exposure, an omit window, changes, filter changes."""

    def build() -> Scenario:
        t = _t0()
        filters = {"ComCam": ("r_03", "g_01"), "LSSTCam": ("r_57", "g_6")}[instrument]
        return scenario_from_dict(
            {
                "instrument": instrument,
                "seed": 7,
                "background": {"mount_hz": 4},
                "exposures": [
                    _exp(t, exptime=0.0, imgtype="BIAS"),
                    _exp(t + 3.0, exptime=2.0, imgtype="DARK"),
                    _exp(t + 12.0, exptime=5.0, ra=20.0, dec=-45.0, rotpa=30.0, filter=filters[0],
                         omit=["MTPtg.currentTargetStatus"], changes={"MTHexapod:1.application.position": 5.0}),
                    _exp(t + 18.0, exptime=3.0, filter=filters[1]),
                    _exp(t + 22.5, exptime=2.0, ra=25.0, dec=-40.0, object="X"),
                ],
            }
        )

    return build


def _calibrations_only(instrument: str) -> Callable[[], Scenario]:
    def build() -> Scenario:
        t = _t0()
        return scenario_from_dict(
            {"instrument": instrument, "exposures": [_exp(t, exptime=0.0, imgtype="BIAS"), _exp(t + 4.0, exptime=1.0, imgtype="FLAT")]}
        )

    return build


SCENARIOS: dict[str, Callable[[], Scenario]] = {"latiss-overlapping": _overlapping_latiss, "latiss-changes": _latiss_changes}
for _inst in ("LATISS", "ComCam", "LSSTCam"):
    for _n in (1, 2, 4, 7):
        SCENARIOS[f"{_inst}-default-{_n}"] = lambda i=_inst, n=_n: default_scenario(i, n=n)
    SCENARIOS[f"{_inst}-bench"] = lambda i=_inst: bench_scenario(i, 6)
    SCENARIOS[f"{_inst}-bench-overlap"] = lambda i=_inst: bench_scenario(i, 6, overlap=True)
    SCENARIOS[f"{_inst}-calibrations"] = _calibrations_only(_inst)
SCENARIOS["ComCam-mixed"] = _maintel("ComCam")
SCENARIOS["LSSTCam-mixed"] = _maintel("LSSTCam")


def _canonical(value: Any) -> Any:
    """Field values as exact JSON-able data (floats by repr, arrays as lists)."""
    if isinstance(value, np.ndarray):
        return [_canonical(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def digest(scenario: Scenario) -> dict[str, Any]:
    """Count and sha256 of every emission of the night, plus the sha256 of its topic set."""
    night = Night(scenario)
    h = hashlib.sha256()
    n = 0
    for e in night.emissions():
        assert type(e) is Emission
        h.update(json.dumps([repr(e.tai), e.component, e.sal_index, e.topic, _canonical(e.fields)]).encode())
        h.update(b"\n")
        n += 1
    topics = hashlib.sha256(json.dumps(sorted(night.topics())).encode()).hexdigest()
    return {"emissions": n, "sha256": h.hexdigest(), "topics": topics}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_night_matches_golden_digest(name: str) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert digest(SCENARIOS[name]()) == golden[name]


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({k: digest(f()) for k, f in sorted(SCENARIOS.items())}, indent=1, sort_keys=True) + "\n")
