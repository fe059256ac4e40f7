"""hs-chaos: play a night at the real clock while killing the instance's processes, and count headers.

Starts one instance under supervisord (temporary run folder and annex), ENABLEs its CSC, plays a
night of short exposures with hs-sim at the real clock (``--start-now``: 0.5-2 s exposures, 2 s
readout, about 4 s per exposure, so 200 exposures take some 14 minutes), and meanwhile:

- SIGKILLs a random process of the instance (listener, cache, composer, publisher, CSC) at random
  moments, ``--kills`` times; supervisord restarts it. Killing the listener restarts the bus side:
  what the bus carried while it was down is an outage the headers must report or recover;
- with ``--annex-faults N``, makes the annex unwritable N times for ``--annex-fault-seconds``: the
  annex is a small tmpfs of its own, filled to the last byte, then emptied (odd episodes), or
  remounted read-only, then read-write (even episodes). Needs root (mount); root ignores chmod.

An independent DDS reader (not part of the instance, never killed) notes when each
endOfImageTelemetry and each largeFileObjectAvailable arrives. At the end it prints exposures taken
(startIntegration on the bus), headers announced, INCOMPLETE (latest announced version, from the
annex index), skipped by the composer, lost (taken, never announced), and the time from each
endOfImageTelemetry to the first announcement of its header (p50/p99/max). Exit status 0 when no
header is lost, 1 otherwise, 2 on bad arguments, 128 + signal when interrupted (everything stopped).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import zmq

from protocols.config import load_instance
from protocols.envelope import EnvelopeError, decode, tai_now
from tools.bench.scenarios import bench_scenario, night_seconds
from tools.bench.stats import summary
from tools.lfo import BusWatcher
from tools.runner import GROUPS, Deployment, exit_on_signals, venv_bin

ROLES = ("listener", "cache", "composer", "publisher", "csc")
SIM_LEAD = 13.0  # s from hs-sim's start to its first exposure: 2 s discovery + 1 s margin + 10 s night lead
QUIET_END = 10.0  # s before the night's last endOfImageTelemetry after which nothing is killed
MIN_GAP = 4.0  # s between two faults: a killed process is back (supervisord, startsecs) before the next


# -- the plan (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after hs-sim started
    kind: str  # "kill" or "annex"
    target: str  # role killed, or "full" / "read-only" for the annex
    seconds: float = 0.0  # how long an annex fault lasts


def plan_faults(seed: int, kills: int, annex_faults: int, annex_seconds: float, night_s: float) -> list[Fault]:
    """Random faults over the night, at least MIN_GAP apart, every role killed at least once when
    there are enough kills, none in the last QUIET_END seconds; sorted by time."""
    rng = random.Random(seed)
    t0, t1 = SIM_LEAD, SIM_LEAD + night_s - QUIET_END
    busy: list[tuple[float, float]] = []

    def free_time(length: float) -> float:
        for _ in range(10000):
            t = rng.uniform(t0, max(t0, t1 - length))
            if all(t + length + MIN_GAP <= a or t >= b + MIN_GAP for a, b in busy):
                busy.append((t, t + length))
                return t
        raise ValueError(f"{kills} kills and {annex_faults} annex faults do not fit a {night_s:.0f}-s night "
                         f"{MIN_GAP:g} s apart: play more exposures")

    out = []
    for i in range(annex_faults):
        out.append(Fault(free_time(annex_seconds), "annex", "full" if i % 2 == 0 else "read-only", annex_seconds))
    roles = list(ROLES)
    rng.shuffle(roles)
    for i in range(kills):
        role = roles[i] if i < len(roles) else rng.choice(ROLES)
        out.append(Fault(free_time(0.0), "kill", role))
    return sorted(out, key=lambda f: f.at)


# -- annex faults ----------------------------------------------------------------------------------


class TmpfsAnnex:
    """The annex on a tmpfs of its own, so that it can be filled or made read-only as root."""

    def __init__(self, path: Path, size_mb: int):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path))
        self.filler = path / ".hs-chaos-filler"
        self.mounted = True

    @staticmethod
    def _mount(*args: str) -> None:
        out = subprocess.run(["mount", *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise OSError(f"mount {' '.join(args)}: {out.stderr.strip() or out.returncode}")

    def fill(self) -> int:
        """Write until the file system is full, down to its last block; bytes written."""
        n = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (1 << 20, 65536, 4096, 1):
                block = b"\0" * size
                while True:
                    try:
                        n += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return n

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, on: bool) -> None:
        """Remount read-only (retried: a file open for writing makes it busy for a moment)."""
        opt = "remount,ro" if on else "remount,rw"
        for attempt in range(50):
            try:
                self._mount("-o", opt, str(self.path))
                return
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)

    def close(self, keep_in: Path | None = None) -> None:
        if not self.mounted:
            return
        self.empty()
        if keep_in is not None:
            shutil.copytree(self.path, keep_in, dirs_exist_ok=True)
        subprocess.run(["umount", str(self.path)], capture_output=True)
        self.mounted = False


# -- observation -----------------------------------------------------------------------------------


class Observer:
    """The independent DDS reader, polled in its own thread so that arrival times are not held up
    by the kills; also collects the composer's ``ctl.skipped`` reports."""

    def __init__(self, domain: int, cfg: Any):
        self.cfg = cfg
        self.bus = BusWatcher(domain, [(cfg.camera, "startIntegration"), (cfg.camera, "endOfImageTelemetry"),
                                       (cfg.csc, "largeFileObjectAvailable")])
        self.skipped: dict[str, str] = {}
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"ctl.skipped.")
        self.sub.connect(cfg.endpoints.composer_pub)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.bus.poll()
            while self.sub.poll(0):
                try:
                    p = decode(self.sub.recv_multipart()).payload
                    self.skipped[str(p["imageName"])] = str(p["reason"])
                except (EnvelopeError, KeyError, TypeError):
                    pass
            time.sleep(0.002)

    def arrivals(self, topic: str) -> list[Any]:
        comp = self.cfg.csc if topic == "largeFileObjectAvailable" else self.cfg.camera
        return list(self.bus.arrivals[(comp, topic)])

    def taken(self) -> list[str]:
        return list(dict.fromkeys(a.sample.imageName for a in self.arrivals("startIntegration")))

    def announced(self) -> dict[str, float]:
        """imageName -> wall time of its first announcement."""
        first: dict[str, float] = {}
        for a in self.arrivals("largeFileObjectAvailable"):
            first.setdefault(a.sample.id, a.wall)
        return first

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sub.close(linger=0)


@dataclass
class Outcome:
    taken: list[str]
    announced: dict[str, float]
    incomplete: list[str]
    reissued: list[str]
    skipped: dict[str, str]
    latency_ms: list[float]
    faults: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lost(self) -> list[str]:
        return [i for i in self.taken if i not in self.announced]

    def report(self) -> dict[str, Any]:
        lat = summary(self.latency_ms, digits=1)
        return {
            "taken": len(self.taken),
            "announced": len([i for i in self.taken if i in self.announced]),
            "incomplete": len(self.incomplete),
            "reissued": len(self.reissued),
            "skipped": len(self.skipped),
            "lost": len(self.lost),
            "lost_images": self.lost,
            "incomplete_images": self.incomplete,
            "kills": sum(f["kind"] == "kill" and f.get("done", False) for f in self.faults),
            "annex_faults": sum(f["kind"] == "annex" and f.get("done", False) for f in self.faults),
            "latency_ms": {k: lat[k] for k in ("n", "p50", "p99", "max")},
            "faults": self.faults,
        }


def latest_index(annex: Path, instrument: str) -> dict[str, dict[str, Any]]:
    """imageName -> latest announced entry of the annex index."""
    out: dict[str, dict[str, Any]] = {}
    path = annex / instrument / "index.jsonl"
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("announced") and "imageName" in e:
            prev = out.get(e["imageName"])
            if prev is None or int(e.get("version", 0)) >= int(prev.get("version", 0)):
                out[e["imageName"]] = e
    return out


def outcome(obs: Observer, annex: Path, instrument: str, faults: list[dict[str, Any]]) -> Outcome:
    taken, announced = obs.taken(), obs.announced()
    ends: dict[str, float] = {}
    for a in obs.arrivals("endOfImageTelemetry"):
        ends.setdefault(a.sample.imageName, a.wall)
    index = latest_index(annex, instrument)
    incomplete = [i for i in taken if i in index and not index[i].get("complete", True)]
    reissued = [i for i in taken if i in index and int(index[i].get("version", 1)) > 1]
    latency = [(announced[i] - ends[i]) * 1000.0 for i in taken if i in announced and i in ends]
    return Outcome(taken, announced, incomplete, reissued, dict(obs.skipped), latency, faults)


def print_report(rep: dict[str, Any], out: Any = sys.stdout) -> None:
    lat = rep["latency_ms"]
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"hs-chaos: {rep['kills']} kills, {rep['annex_faults']} annex faults", file=out)
    print(f"  exposures taken     {rep['taken']}", file=out)
    print(f"  headers announced   {rep['announced']}", file=out)
    print(f"  INCOMPLETE          {rep['incomplete']}  (reissued complete later: {rep['reissued']})", file=out)
    print(f"  skipped             {rep['skipped']}", file=out)
    print(f"  lost                {rep['lost']}{'  ' + ' '.join(rep['lost_images']) if rep['lost_images'] else ''}", file=out)
    print(f"  endOfImageTelemetry -> announcement (ms): p50 {fmt(lat['p50'])}  p99 {fmt(lat['p99'])}  "
          f"max {fmt(lat['max'])}  (n {lat['n']})", file=out)


# -- the run ---------------------------------------------------------------------------------------


class Chaos:
    """Carries out the plan against a running deployment."""

    def __init__(self, dep: Deployment, instrument: str, annex: TmpfsAnnex | None, log: Any):
        self.dep, self.group, self.annex, self.log = dep, GROUPS[instrument], annex, log
        self.done: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.ending: list[tuple[float, Fault, dict[str, Any]]] = []  # annex faults to end: (monotonic time, fault, record)

    def program(self, role: str) -> str:
        return f"{self.group}:{self.group}-{role}"

    def kill(self, f: Fault) -> None:
        prog = self.program(f.target)
        deadline = time.monotonic() + 15
        pid = 0
        while time.monotonic() < deadline:  # still coming back from an earlier kill: wait for it
            if self.dep.status().get(prog) == "RUNNING":
                try:
                    pid = self.dep.pid(prog)
                except (RuntimeError, ValueError):
                    pid = 0
                if pid > 0:
                    break
            time.sleep(0.2)
        rec = {"kind": "kill", "target": f.target, "at": round(time.monotonic() - self.t0, 1), "pid": pid, "done": False}
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
                rec["done"] = True
            except ProcessLookupError:
                pass
        self.done.append(rec)
        print(f"hs-chaos: {rec['at']:7.1f} s  SIGKILL {f.target} (pid {pid}){'' if rec['done'] else ' missed'}", file=self.log, flush=True)

    def annex_start(self, f: Fault) -> None:
        assert self.annex is not None
        at = round(time.monotonic() - self.t0, 1)
        if f.target == "full":
            n = self.annex.fill()
            what = f"annex full ({n / 1e6:.1f} MB of filler)"
        else:
            self.annex.read_only(True)
            what = "annex read-only"
        rec = {"kind": "annex", "target": f.target, "at": at, "seconds": f.seconds, "done": True}
        self.done.append(rec)
        self.ending.append((time.monotonic() + f.seconds, f, rec))
        print(f"hs-chaos: {at:7.1f} s  {what} for {f.seconds:g} s", file=self.log, flush=True)

    def annex_end(self, f: Fault, rec: dict[str, Any]) -> None:
        assert self.annex is not None
        if f.target == "full":
            self.annex.empty()
        else:
            self.annex.read_only(False)
        rec["ended"] = round(time.monotonic() - self.t0, 1)
        print(f"hs-chaos: {rec['ended']:7.1f} s  annex writable again", file=self.log, flush=True)

    def step(self, due: list[Fault]) -> None:
        """Do what is due now (faults are popped from the front of ``due``)."""
        now = time.monotonic() - self.t0
        for item in list(self.ending):
            if time.monotonic() >= item[0]:
                self.ending.remove(item)
                self.annex_end(item[1], item[2])
        while due and due[0].at <= now:
            f = due.pop(0)
            if f.kind == "kill":
                self.kill(f)
            else:
                self.annex_start(f)

    def finish(self) -> None:
        for _, f, rec in self.ending:
            self.annex_end(f, rec)
        self.ending.clear()


def scenario_file(instrument: str, n: int, folder: Path) -> Path:
    """The bench's short-exposure night, as an hs-sim scenario file (hs-sim shifts it to now)."""
    sc = bench_scenario(instrument, n, start=tai_now() + SIM_LEAD)  # targets up now
    data = sc.model_dump(mode="json", exclude_defaults=True)
    data["instrument"] = instrument
    path = folder / "chaos-night.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hs-chaos", description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[2:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instrument", default="LATISS", choices=list(GROUPS))
    p.add_argument("--exposures", type=int, default=200, help="exposures of the night (default 200, ~14 min)")
    p.add_argument("--kills", type=int, default=30, help="SIGKILLs of random processes (default 30)")
    p.add_argument("--annex-faults", type=int, default=0, help="episodes of unwritable annex (needs root; default 0)")
    p.add_argument("--annex-fault-seconds", type=float, default=20.0, help="length of each annex episode (default 20 s)")
    p.add_argument("--annex-size-mb", type=int, default=256, help="size of the annex tmpfs (default 256 MB)")
    p.add_argument("--seed", type=int, default=20261125, help="seed of the fault plan (default 20261125)")
    p.add_argument("--domain", type=int, default=int(os.environ.get("HS_DDS_DOMAIN", "0")), help="DDS domain id")
    p.add_argument("--port-offset", type=int, default=int(os.environ.get("HS_PORT_OFFSET", "0")))
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the last headers after the night")
    p.add_argument("--json", type=Path, help="write the figures and the faults done as JSON")
    p.add_argument("--keep", action="store_true", help="keep the run folder and annex")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.exposures < 1 or args.kills < 0 or args.annex_faults < 0:
        p.error("--exposures must be at least 1, --kills and --annex-faults at least 0")
    night_s = night_seconds(args.exposures)
    try:
        plan = plan_faults(args.seed, args.kills, args.annex_faults, args.annex_fault_seconds, night_s)
    except ValueError as exc:
        p.error(str(exc))
    exit_on_signals()  # SIGTERM/SIGINT: the clean-up below stops hs-sim, supervisord and the mount

    tmp = Path(tempfile.mkdtemp(prefix="hs-chaos-"))
    dep = Deployment(tmp / "run", tmp / "annex", args.domain, args.port_offset)
    dep.apply_env()
    cfg = load_instance(args.instrument)
    log = sys.stderr
    print(f"hs-chaos: {args.instrument}, {args.exposures} exposures (~{night_s / 60:.1f} min at the real clock), "
          f"{args.kills} kills, {args.annex_faults} annex faults, seed {args.seed}; logs {dep.run_dir}", file=log, flush=True)
    annex: TmpfsAnnex | None = None
    sim: subprocess.Popen | None = None
    obs: Observer | None = None
    chaos: Chaos | None = None
    rep: dict[str, Any] | None = None
    try:
        if args.annex_faults:
            try:
                annex = TmpfsAnnex(dep.annex, args.annex_size_mb)
            except OSError as exc:
                print(f"hs-chaos: annex faults need a tmpfs of their own (root): {exc}", file=log)
                return 2
        dep.start()
        dep.start_instance(args.instrument)
        dep.wait_running(args.instrument)
        obs = Observer(args.domain, cfg)
        time.sleep(1.0)  # DDS discovery of the observer before the night starts
        path = scenario_file(args.instrument, args.exposures, tmp)
        sim = subprocess.Popen([venv_bin("hs-sim"), "--scenario", str(path), "--speed", "1", "--start-now",
                                "--domain", str(args.domain), "--linger", "15", "-q"], env=dep.env)
        chaos = Chaos(dep, args.instrument, annex, log)
        due = list(plan)
        while sim.poll() is None:
            chaos.step(due)
            time.sleep(0.05)
        chaos.finish()
        if sim.returncode != 0:
            print(f"hs-chaos: hs-sim failed (exit {sim.returncode})", file=log)
            return 1
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not set(obs.taken()) <= set(obs.announced()):
            time.sleep(0.5)
        rep = outcome(obs, dep.annex, args.instrument, chaos.done).report()
    finally:
        if sim is not None and sim.poll() is None:
            sim.terminate()
            sim.wait(10)
        if chaos is not None:
            chaos.finish()
        if obs is not None:
            obs.close()
        dep.stop()
        if annex is not None:
            annex.close(keep_in=tmp / "annex-kept" if args.keep or rep is None or rep["lost"] else None)
        if rep is not None and rep["lost"] == 0 and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(rep)
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))
    return 0 if rep["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
