"""The bench's simulated nights: many short exposures with the scenario's background telemetry.

Built with the hs-sim scenario models (:mod:`tools.sim.scenario`), so the bench plays exactly what
hs-sim would: exposures of 0.5-2 s on targets near the meridian (a new target every second exposure,
a filter change every tenth), each followed by the 2 s readout and endOfImageTelemetry 0.3 s later.
Background telemetry keeps the scenario's default rates in simulated time (mount 20 Hz, ~1 Hz
environment), so playing the night N times faster sends N times as many samples per second.
"""

from __future__ import annotations

import datetime as _dt

from tools.sim.scenario import (
    DEFAULT_START,
    INSTRUMENTS,
    Scenario,
    _local_sidereal_deg,  # approximate LST: targets near the meridian
    scenario_from_dict,
    tai_from_datetime,
    tai_iso,
)

EXPTIMES = (1.0, 0.5, 2.0, 1.5)
READOUT = 2.0
END_TELEMETRY = 0.3
GAP = 0.5  # s between one exposure's endOfImageTelemetry and the next start (no overlap)
OVERLAP_INTO_READOUT = 1.0  # s into the previous readout at which an overlapping exposure starts
_OBJECTS = ("HD 164461", "NGC 6752", "HD 185975", "47 Tuc field", "Fornax field", "HD 2151", "Omega Cen")


def night_seconds(n: int, overlap: bool = False) -> float:
    """Simulated duration of a bench night of ``n`` exposures (without the 10 s lead)."""
    mean_t = sum(EXPTIMES) / len(EXPTIMES)
    step = mean_t + (OVERLAP_INTO_READOUT if overlap else READOUT + END_TELEMETRY + GAP)
    return n * step + READOUT + END_TELEMETRY


def bench_scenario(
    instrument: str,
    n: int,
    *,
    start: float | None = None,
    first_seq: int = 1,
    overlap: bool = False,
) -> Scenario:
    """A night of ``n`` short OBJECT exposures for ``instrument``.

    ``start`` is the TAI unix time of the first exposure (default the hs-sim default night's),
    ``first_seq`` the SEQNUM of the first image (give each night of one instance distinct names:
    the publisher announces an imageName once), ``overlap`` starts every exposure 1 s into the
    previous one's 2 s readout.
    """
    info = INSTRUMENTS[instrument]
    t0 = tai_from_datetime(_dt.datetime.fromisoformat(DEFAULT_START)) if start is None else float(start)
    lst = _local_sidereal_deg(t0)
    filters = [f.name for f in info.filters[1:5]] or [info.filters[0].name]
    exps = []
    t = t0
    for i in range(n):
        k = i // 2  # a new target every second exposure
        T = EXPTIMES[i % len(EXPTIMES)]
        exps.append(
            {
                "start": tai_iso(t),
                "exptime": T,
                "ra": round((lst - 20.0 + 7.3 * (k % 6) + 0.01 * k) % 360.0, 4),
                "dec": round(-30.24 + (-20.0, 12.0, -8.0, 5.0, -35.0)[k % 5], 4),
                "rotpa": round((15.0 + 37.0 * k) % 360.0, 2),
                "filter": filters[(i // 10) % len(filters)],
                "object": _OBJECTS[k % len(_OBJECTS)],
                "imgtype": "OBJECT",
                "program": "BENCH",
                "reason": "hs-bench",
                "readout_delay": READOUT,
                "end_telemetry_delay": END_TELEMETRY,
            }
        )
        t += T + (OVERLAP_INTO_READOUT if overlap else READOUT + END_TELEMETRY + GAP)
    return scenario_from_dict(
        {"instrument": instrument, "first_seq": first_seq, "exposures": exps}, f"<hs-bench {instrument}>"
    )
