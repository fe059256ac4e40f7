"""Peak RSS of each process of an instance, sampled with psutil while the bench runs."""

from __future__ import annotations

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
        total = 0
        for role in self.roles:
            p = self.procs.get(role)
            rss = None
            for _ in range(2):
                if p is None:
                    p = self._resolve(role)
                if p is None:
                    break
                try:
                    rss = p.memory_info().rss
                    break
                except psutil.Error:
                    p = None
            self.procs[role] = p
            if rss is not None:
                self.last[role] = rss
                self.peak[role] = max(self.peak[role], rss)
                total += rss
        self.peak_total = max(self.peak_total, total)
        self.samples += 1

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
            "final_rss_mb": {r: mb(v) for r, v in self.last.items()},
            "samples": self.samples,
            "period_s": self.period,
            "restarts": {r: max(len(p) - 1, 0) for r, p in self.pids.items()},
            **({"errors": self.errors} if self.errors else {}),
        }
