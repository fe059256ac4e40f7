"""Latency from endOfImageTelemetry to the fast path and to largeFileObjectAvailable.

The bench plays the night in-process (:class:`TimedPlayer`, a :class:`tools.sim.player.Player`
that notes ``time.time()`` right after writing each endOfImageTelemetry), while a separate probe
process (:mod:`tools.bench.probe`) timestamps each header on the fast path and each announcement on
DDS. Both clocks are the same system clock, so the difference is the end-to-end latency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from protocols.config import load_instance
from protocols.timescale import utc_from_tai
from tools.bench.stats import ms_summary, percentile
from tools.runner import Deployment
from tools.sim.night import Night
from tools.sim.player import KafkaPlayer, Player
from tools.sim.scenario import Scenario


SLOW_WRITE_S = 0.001
STAGES = ("eoit_to_composer_send", "before_compose", "compose", "fast_path_transfer", "publisher_write_and_announce")
#: before_compose in its parts, when the payload carries the composer's own stamps
BEFORE_COMPOSE = ("bus_to_listener", "listener_to_composer", "composer_before_collect", "collect")
BOOST = -5  # nice value of the bench's measuring threads and probe (only when allowed, i.e. as root)


def boost(pid: int | None = None) -> bool:
    """Raise the scheduling priority of a process, or of the calling thread (Linux nice is per thread).

    On a 2-core machine the instance keeps both cores busy right after endOfImageTelemetry; a
    player or probe waiting for a core would add its own wait to the measured latency (a forwarder
    or the EFD run elsewhere). Only the measuring side is raised, never the instance's processes.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, pid if pid is not None else threading.get_native_id(), BOOST)
        return True
    except (OSError, AttributeError):
        return False


def unboost() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 0)
    except (OSError, AttributeError):
        pass


class TimedPlayer(Player):
    """A Player that records when each endOfImageTelemetry of ``camera`` was written.

    The time is ``time.time()`` right after the DDS write returns. On a busy machine the OS may
    deschedule the player just after the write, while the instance already works on the sample
    (negative latencies were seen on 2 cores): when the write took more than 1 ms, the time taken
    just before it is used instead (and counted in ``slow_writes``).
    """

    def __init__(self, domain_id: int, camera: str):
        super().__init__(domain_id, log=open(os.devnull, "w"))  # noqa: SIM115
        self.camera = camera
        self.eoit: dict[str, float] = {}
        self.write_ms: list[float] = []
        self.slow_writes = 0

    def write(self, e: Any) -> None:  # noqa: ANN401
        if e.topic != "endOfImageTelemetry" or e.component != self.camera:
            super().write(e)
            return
        before = time.time()
        super().write(e)
        after = time.time()
        self.write_ms.append((after - before) * 1000.0)
        if after - before > SLOW_WRITE_S:
            self.slow_writes += 1
            after = before
        self.eoit[e.fields["imageName"]] = after


class TimedKafkaPlayer(TimedPlayer, KafkaPlayer):
    """:class:`TimedPlayer` on Kafka (``hs-bench --bus kafka``): the time taken is right after the
    record is handed to the producer, which sends it at once (Tansu's batch.num.messages=1)."""

    def __init__(self, camera: str, env: dict[str, str] | None = None):
        KafkaPlayer.__init__(self, log=open(os.devnull, "w"), env=env)  # noqa: SIM115
        self.camera = camera
        self.eoit = {}
        self.write_ms = []
        self.slow_writes = 0


def timed_player(bus: str, domain: int, camera: str, env: dict[str, str] | None = None) -> TimedPlayer:
    """The player of one instance; on Kafka with that instance's bus variables (``env``, default os.environ)."""
    return TimedKafkaPlayer(camera, env) if bus == "kafka" else TimedPlayer(domain, camera)


class Probe:
    """The probe subprocess of one instance and the arrivals it reports."""

    def __init__(self, dep: Deployment, instrument: str):
        dep.apply_env()
        cfg = load_instance(instrument)
        self.instrument = instrument
        self.fast: dict[str, dict[str, Any]] = {}  # first arrival per image
        self.lfo: dict[str, dict[str, Any]] = {}
        self.events: dict[str, float] = {}
        self.skipped: dict[str, str] = {}  # image -> why the composer skipped it (ctl.skipped)
        self.summary: dict[str, Any] = {}
        self.errors: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench.probe", "--fast", cfg.endpoints.composer_pub,
             "--instrument", instrument, "--domain", str(dep.domain), "--csc", cfg.csc,
             "--cache", cfg.endpoints.cache_router, "--nice", str(BOOST), "--bus", dep.bus],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dep.env,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, name=f"probe-{instrument}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                k = d.get("k")
                if k == "fast":
                    self.fast.setdefault(d["image"], d)
                elif k == "lfo":
                    self.lfo.setdefault(d["image"], d)
                elif k == "skipped":
                    self.skipped[d["image"]] = d.get("reason", "")
                elif k == "summary":
                    self.summary = d
                else:
                    self.events[k] = d.get("t", time.time())
                self.cond.notify_all()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not {"composer_ready", "lfo_ready"} <= set(self.events):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    missing = {"composer_ready", "lfo_ready"} - set(self.events)
                    raise RuntimeError(f"{self.instrument} probe not ready after {timeout:.0f} s (missing {sorted(missing)})"
                                       + (f"; probe exited: {self._stderr()}" if self.proc.poll() is not None else ""))
                self.cond.wait(min(left, 0.2))

    def wait_for(self, images: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (images <= set(self.fast) and images <= set(self.lfo)):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self.cond.wait(min(left, 0.2))
        return True

    def _stderr(self) -> str:
        try:
            return (self.proc.stderr.read() if self.proc.stderr else "")[-2000:]
        except (OSError, ValueError):
            return ""

    def close(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        return self.summary


@dataclass
class NightResult:
    instrument: str
    label: str
    eoit: dict[str, float]
    fast: dict[str, dict[str, Any]]
    lfo: dict[str, dict[str, Any]]
    wall_s: float
    samples: int
    sim_s: float
    speed: float
    lag_ms: float  # how late the player's last write was against its schedule
    skipped: int = 0  # exposures the composer reported skipped (ctl.skipped)
    write_ms: list[float] = field(default_factory=list)  # endOfImageTelemetry writes, as timed
    slow_writes: int = 0
    fast_ms: list[float] = field(default_factory=list)
    lfo_ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fast_ms = [(self.fast[i]["t"] - t) * 1000.0 for i, t in self.eoit.items() if i in self.fast]
        self.lfo_ms = [(self.lfo[i]["t"] - t) * 1000.0 for i, t in self.eoit.items() if i in self.lfo]

    def image_stages(self, image: str) -> dict[str, float] | None:
        """Where one image's time went (ms): before the composer sends (DDS, listener, cache, event
        handling), the compose itself, the fast-path transfer, and publisher + DDS after the send."""
        t = self.eoit.get(image)
        f = self.fast.get(image)
        if t is None or not f or f.get("sent") is None:
            return None
        send = (f["sent"] - t) * 1000.0
        out = {"eoit_to_composer_send": send, "fast_path_transfer": (f["t"] - f["sent"]) * 1000.0}
        if f.get("compose_s") is not None:
            out["compose"] = f["compose_s"] * 1000.0
            out["before_compose"] = send - out["compose"]
            if all(f.get(k) is not None for k in ("collect_s", "listener_tai", "composer_tai")):
                heard, got = utc_from_tai(f["listener_tai"]), utc_from_tai(f["composer_tai"])
                out["bus_to_listener"] = (heard - t) * 1000.0
                out["listener_to_composer"] = (got - heard) * 1000.0
                out["collect"] = f["collect_s"] * 1000.0
                out["composer_before_collect"] = out["before_compose"] - out["collect"] - (got - t) * 1000.0
        if image in self.lfo:
            out["publisher_write_and_announce"] = (self.lfo[image]["t"] - f["sent"]) * 1000.0
        return out

    def stages(self) -> dict[str, Any]:
        """Each stage's distribution over the night's images (see :meth:`image_stages`)."""
        per: dict[str, list[float]] = {k: [] for k in STAGES + BEFORE_COMPOSE}
        for i in self.eoit:
            for k, v in (self.image_stages(i) or {}).items():
                per[k].append(v)
        return {
            **{k: ms_summary(v) for k, v in per.items()},
            "note": "before_compose = DDS hop, listener, ZeroMQ, composer event handling, cache collect "
                    "(its parts: bus_to_listener, listener_to_composer, composer_before_collect, collect); "
                    "publisher_write_and_announce = composer send -> largeFileObjectAvailable at the reader",
        }

    def tail(self, path: str) -> dict[str, Any]:
        """The images at or above the p99 of ``path`` (fast_path or announcement), each with where its
        time went, and the stage that grew most against the night's median: a tail traced to its cause."""
        arrivals = self.fast if path == "fast_path" else self.lfo
        lat = {i: (arrivals[i]["t"] - t) * 1000.0 for i, t in self.eoit.items() if i in arrivals}
        if not lat:
            return {"p99_ms": None, "images": []}
        p99 = percentile(list(lat.values()), 99)
        medians = {k: v["p50_ms"] for k, v in self.stages().items() if isinstance(v, dict) and v.get("p50_ms") is not None}
        images = []
        for i in sorted((i for i, v in lat.items() if v >= p99), key=lambda i: -lat[i]):
            st = {k: round(v, 2) for k, v in (self.image_stages(i) or {}).items()}
            whole = ("eoit_to_composer_send", "before_compose") if "collect" in st else ("eoit_to_composer_send",)
            excess = {k: v - medians[k] for k, v in st.items() if k in medians and k not in whole}
            grew = max(excess, key=lambda k: excess[k]) if excess else None
            images.append({"image": i, "ms": round(lat[i], 2), "stages_ms": st, "grew_most": grew,
                           "grew_by_ms": round(excess[grew], 2) if grew else None})  # fmt: skip
        return {"p99_ms": round(p99, 3), "images": images}

    def report(self) -> dict[str, Any]:
        images = set(self.eoit)
        fast = [self.fast[i] for i in images if i in self.fast]
        sizes = sorted(d["bytes"] for d in fast)
        file_sizes = sorted(self.lfo[i]["bytes"] for i in images if i in self.lfo)
        return {
            "status": "ok" if self.fast_ms and self.lfo_ms else "failed",
            "exposures": len(images),
            "fast_path": ms_summary(self.fast_ms),
            "announcement": ms_summary(self.lfo_ms),
            "missing_fast_path": len(images - set(self.fast)),
            "missing_announcement": len(images - set(self.lfo)),
            "incomplete_headers": sum(1 for d in fast if not d.get("complete")),
            "skipped_by_composer": self.skipped,
            "fast_path_payload_bytes": sizes[len(sizes) // 2] if sizes else None,
            "header_file_bytes": file_sizes[len(file_sizes) // 2] if file_sizes else None,
            "speed": self.speed,
            "simulated_s": round(self.sim_s, 1),
            "wall_s": round(self.wall_s, 1),
            "samples_written": self.samples,
            "bus_samples_per_s": round(self.samples / self.wall_s, 1) if self.wall_s > 0 else None,
            "player_lag_ms": round(self.lag_ms, 1),
            "stages_ms": self.stages(),
            "tail": {"fast_path": self.tail("fast_path"), "announcement": self.tail("announcement")},
            "eoit_write_ms": ms_summary(self.write_ms),
            "eoit_slow_writes": self.slow_writes,
        }


def play_night(player: TimedPlayer, probe: Probe, sc: Scenario, speed: float, label: str, wait_s: float) -> NightResult:
    """Play one night, then wait up to ``wait_s`` for every header on both paths."""
    night = Night(sc)
    images = {img.name for img in sc.image_ids()}
    player.prepare_topics(night.topics())
    player.wait_for_readers(5.0)
    before = sum(player.counts.values())
    player.eoit.clear()
    player.write_ms.clear()
    player.slow_writes = 0
    boosted = boost()
    w0 = time.monotonic()
    try:
        player.play(night.emissions(), speed, camera=night.camera)
    finally:
        if boosted:
            unboost()
    wall = time.monotonic() - w0
    lag = (wall - (night.t_end - night.t_start) / speed) * 1000.0 if speed > 0 else 0.0
    probe.wait_for(images, wait_s)
    with probe.cond:
        fast = {i: d for i, d in probe.fast.items() if i in images}
        lfo = {i: d for i, d in probe.lfo.items() if i in images}
        skipped = sum(1 for i in probe.skipped if i in images)
    eoit = {i: t for i, t in player.eoit.items() if i in images}
    return NightResult(sc.instrument, label, eoit, fast, lfo, wall, sum(player.counts.values()) - before,
                       night.t_end - night.t_start, speed, lag, skipped, list(player.write_ms),
                       player.slow_writes)  # fmt: skip
