"""hs-chaos, the fault-injection run: a short night at the real clock with processes SIGKILLed at
random moments (and, as root, the annex full for a while) loses no header; and its fault plan."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import fresh_domain_and_offset
from tools.bench.scenarios import night_seconds
from tools.chaos import MIN_GAP, QUIET_END, ROLES, SIM_LEAD, plan_faults
from tools.runner import venv_bin


def test_fault_plan_covers_every_process_apart_and_inside_the_night() -> None:
    night = night_seconds(200)
    plan = plan_faults(7, 30, 4, 20.0, night)
    assert plan == plan_faults(7, 30, 4, 20.0, night)  # the seed decides
    kills = [f for f in plan if f.kind == "kill"]
    annex = [f for f in plan if f.kind == "annex"]
    assert len(kills) == 30 and {f.target for f in kills} == set(ROLES)
    assert sorted(f.target for f in annex) == ["full", "full", "read-only", "read-only"]
    spans = sorted((f.at, f.at + f.seconds) for f in plan)
    assert all(b_start - a_end >= MIN_GAP for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert all(SIM_LEAD <= s and e <= SIM_LEAD + night - QUIET_END for s, e in spans)


def test_smoke_night_with_kills_loses_no_header(tmp_path: Path) -> None:
    domain, offset = fresh_domain_and_offset()
    annex_faults = "1" if os.geteuid() == 0 else "0"  # a tmpfs of its own needs root
    out = subprocess.run([venv_bin("hs-chaos"), "--exposures", "10", "--kills", "3", "--annex-faults", annex_faults,
                          "--annex-fault-seconds", "6", "--seed", "54", "--domain", str(domain), "--port-offset", str(offset),
                          "--json", str(tmp_path / "chaos.json")], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout + out.stderr
    rep = json.loads((tmp_path / "chaos.json").read_text())
    assert (rep["taken"], rep["announced"], rep["lost"], rep["skipped"]) == (10, 10, 0, 0), rep
    assert rep["kills"] == 3 and rep["annex_faults"] == int(annex_faults), rep["faults"]
    assert {f["target"] for f in rep["faults"] if f["kind"] == "kill"} == {"csc", "composer", "listener"}  # seed 54
    assert rep["latency_ms"]["n"] == 10
    assert "headers announced   10" in out.stdout and "lost                0" in out.stdout
