"""Peak memory of each process of an instance, sampled while the bench runs, and the CPU each
process used and waited for.

RSS (psutil) is the goal's measure: what each process holds resident, summed over the instance's
processes. Summed RSS counts every shared page (libpython, libstdc++, Cyclone DDS, numpy's code...)
once per process that maps it, so PSS (proportional set size, ``/proc/PID/smaps_rollup``: a shared
page's size divided by the processes that map it) is reported beside it: the instance's share of the
machine's memory.

CPU time and the time spent runnable but waiting for a CPU (``/proc/PID/task/*/schedstat``, all
threads) tell whether a slow exposure's process was working or queued behind others: on two cores
shared with the simulator and a second instance, the queue is where tails come from.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psutil

from tools.runner import GROUPS, Deployment

ROLES = ("listener", "cache", "composer", "publisher")  # and any other program of the group (csc...)


def group_roles(dep: Deployment, instrument: str) -> list[str]:
    """The programs of the instance's supervisord group, by role (``latiss:latiss-cache`` -> cache)."""
    g = GROUPS[instrument]
    try:
        found = [k.split(":", 1)[1].removeprefix(f"{g}-") for k in dep.status() if k.startswith(f"{g}:")]
    except RuntimeError:
        found = []
    return found or list(ROLES)


def sched_seconds(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, seconds runnable waiting for a CPU) summed over a process's threads, or None
    when unreadable; a thread that ended is no longer counted."""
    cpu = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                ran, waited, _ = fh.read().split()
        except (OSError, ValueError):
            continue
        cpu, wait = cpu + int(ran), wait + int(waited)
    return cpu / 1e9, wait / 1e9


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of a process from ``/proc/PID/smaps_rollup`` (None where unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemorySampler:
    """Samples the RSS of the instance's processes every ``period`` seconds in a thread.

    Processes are found with :meth:`Deployment.pid` (supervisorctl) and looked up again if one
    disappears (a restart is counted, the new process sampled).
    """

    def __init__(self, dep: Deployment, instrument: str, period: float = 0.5):
        self.dep = dep
        self.instrument = instrument
        self.period = period
        self.group = GROUPS[instrument]
        self.roles = group_roles(dep, instrument)
        self.procs: dict[str, psutil.Process | None] = {}
        self.pids: dict[str, set[int]] = {r: set() for r in self.roles}
        self.peak: dict[str, int] = {r: 0 for r in self.roles}
        self.last: dict[str, int] = {r: 0 for r in self.roles}
        self.peak_total = 0
        self.peak_pss: dict[str, int] = {r: 0 for r in self.roles}
        self.peak_pss_total = 0
        self.sched: dict[int, tuple[str, tuple[float, float], tuple[float, float]]] = {}  # pid -> role, first, last
        self.machine_first = psutil.cpu_times()
        self.samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mem-{instrument}", daemon=True)

    def _resolve(self, role: str) -> psutil.Process | None:
        try:
            pid = self.dep.pid(f"{self.group}:{self.group}-{role}")
            if pid <= 0:
                return None
            p = psutil.Process(pid)
            self.pids[role].add(pid)
            return p
        except (RuntimeError, ValueError, psutil.Error) as exc:
            if len(self.errors) < 5:
                self.errors.append(f"{role}: {exc}")
            return None

    def sample(self) -> None:
        total = total_pss = 0
        for role in self.roles:
            p = self.procs.get(role)
            rss = pss = None
            for _ in range(2):
                if p is None:
                    p = self._resolve(role)
                if p is None:
                    break
                try:
                    rss = p.memory_info().rss
                    pss = pss_bytes(p.pid)
                    self._sched(role, p.pid)
                    break
                except psutil.Error:
                    p = None
            self.procs[role] = p
            if rss is not None:
                self.last[role] = rss
                self.peak[role] = max(self.peak[role], rss)
                total += rss
            if pss is not None:
                self.peak_pss[role] = max(self.peak_pss[role], pss)
                total_pss += pss
        self.peak_total = max(self.peak_total, total)
        self.peak_pss_total = max(self.peak_pss_total, total_pss)
        self.samples += 1

    def _sched(self, role: str, pid: int) -> None:
        now = sched_seconds(pid)
        if now is not None:
            first = self.sched[pid][1] if pid in self.sched else now
            self.sched[pid] = (role, first, now)

    def cpu(self) -> dict[str, Any]:
        """CPU seconds and seconds waiting for a CPU per role since the sampler started, and how
        busy the whole machine was over that span."""
        per: dict[str, list[float]] = {r: [0.0, 0.0] for r in self.roles}
        for role, first, last in self.sched.values():
            per[role][0] += last[0] - first[0]
            per[role][1] += last[1] - first[1]
        t0, t1 = self.machine_first, psutil.cpu_times()
        total = sum(t1) - sum(t0)
        idle = (t1.idle + getattr(t1, "iowait", 0.0)) - (t0.idle + getattr(t0, "iowait", 0.0))
        return {
            "cpu_s": {r: round(v[0], 2) for r, v in per.items()},
            "waited_for_cpu_s": {r: round(v[1], 2) for r, v in per.items()},
            "machine_busy_pct": round(100.0 * (1.0 - idle / total), 1) if total > 0 else None,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def start(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5)
            self.sample()
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        return {
            "peak_rss_mb": {r: mb(v) for r, v in self.peak.items()},
            "peak_total_mb": mb(self.peak_total),
            "sum_of_peaks_mb": mb(sum(self.peak.values())),
            "peak_pss_mb": {r: mb(v) for r, v in self.peak_pss.items()},
            "peak_pss_total_mb": mb(self.peak_pss_total),
            "final_rss_mb": {r: mb(v) for r, v in self.last.items()},
            "samples": self.samples,
            "period_s": self.period,
            "restarts": {r: max(len(p) - 1, 0) for r, p in self.pids.items()},
            **self.cpu(),
            **({"errors": self.errors} if self.errors else {}),
        }


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.memory LSSTCam --exposures 20 [--overlap]``: one instance started, a
    short night played at the bench's clock, its processes' peak RSS and PSS and the night's latency
    printed as JSON (the memory and one latency piece of hs-bench alone, without the rest)."""
    import argparse
    import json
    import os
    import tempfile
    from pathlib import Path

    from protocols.sal import LOOPBACK_XML
    from tools.bench.main import Instance

    p = argparse.ArgumentParser(prog="python -m tools.bench.memory", description=main.__doc__)
    p.add_argument("instrument", choices=tuple(GROUPS))
    p.add_argument("--exposures", type=int, default=20)
    p.add_argument("--speed", type=float, default=10.0)
    p.add_argument("--domain", type=int, default=230)
    p.add_argument("--port-offset", type=int, default=27000)
    p.add_argument("--overlap", action="store_true", help="each exposure starts 1 s into the previous readout")
    args = p.parse_args(argv)
    os.environ.setdefault("CYCLONEDDS_URI", LOOPBACK_XML.as_uri())
    inst = Instance(Path(tempfile.mkdtemp(prefix="hs-mem-")), args.instrument, args.domain, args.port_offset)
    try:
        inst.up()
        r = inst.night(args.exposures, args.speed, wait_s=60.0, overlap=args.overlap)
        inst.stop_observers()
        rep = r.report()
        print(json.dumps({"instrument": args.instrument, "exposures": args.exposures, "overlap": args.overlap,
                          "headers": len(r.lfo_ms), "latency": {k: rep.get(k) for k in ("fast_path", "announcement", "tail", "stages_ms")},
                          "memory": inst.memory}, indent=1))  # fmt: skip
    finally:
        inst.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
