"""hs-bench: run real Header Service instances and measure them.

Starts each camera's instance (supervisord, DDS on loopback, ZeroMQ, annex on disk) with its own run
folder, DDS domain and port offset; plays a night of short exposures with the scenario's background
telemetry in this process; and measures, from the moment endOfImageTelemetry is written:

- latency to the fast path (a forwarder-side client) and to largeFileObjectAvailable (an
  independent DDS reader): p50, p99, max per camera; also with overlapping exposures and with
  ComCam and LSSTCam running side by side;
- the floor: fitsio writing the same header plus MD5, raw ZeroMQ and DDS hops (our latency / floor);
- ingest: the highest ESS sample rate the listener and cache take without loss, against ddsperf;
- memory: peak RSS of each process of each instance, and PSS beside it (shared pages shared out).

``--bus kafka`` runs the instances, the player and the announcement reader on SAL over Kafka (the
embedded broker and registry unless LSST_KAFKA_BROKER_ADDR is set) and measures the same latencies,
the same ingest (a Kafka writer of ESS temperature, :mod:`tools.bench.ingest_kafka`) and the same
side-by-side run (each instance under a topic subname of its own on the one broker, as each has a
DDS domain of its own on DDS); its floor adds the broker's raw rate with a plain confluent-kafka
producer and consumer (:mod:`tools.bench.kafka_floor`). ``--bus dds,kafka`` runs the whole bench on
each bus in turn and reports them side by side (:mod:`tools.bench.compare`).

JSON goes to stdout (or --json FILE), a short summary to stderr, the latency plot to --plot.
Targets are reported as met / not met, never asserted: the exit status is 0 unless the bench itself
could not run (a camera that fails is reported as failed and the others go on).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.config import load_instance
from protocols.sal import LOOPBACK_XML
from tools.bench import ddsperf, floor
from tools.bench.compare import compare_text, comparison
from tools.bench.ingest import run_ingest
from tools.bench.latency import BOOST, NightResult, Probe, TimedPlayer, play_night, timed_player
from tools.bench.memory import MemorySampler, group_roles
from tools.bench.plot import write_plot
from tools.bench.repeat import fold, spread_text
from tools.bench.report import evaluate, summary_text
from tools.bench.scenarios import bench_scenario
from tools.bench.stats import ms_summary, ratio
from tools.runner import GROUPS, Deployment
from tools.s3server import MotoServer
from tools.sim.night import Night

CAMERAS = ("LATISS", "ComCam", "LSSTCam")
EVENT_BYTES = 1200  # a listener message carrying endOfImageTelemetry, about


@dataclass
class Plan:
    cameras: list[str]
    exposures: int
    overlap_exposures: int
    side_exposures: int
    speed: float
    ingest_rates: list[float]
    ingest_step_s: float
    ingest_sustain_s: float
    floor_reps: int
    hop_count: int
    ddsperf_s: float
    wait_s: float


def make_plan(args: argparse.Namespace) -> Plan:
    q = args.quick
    cams = [c.strip() for c in (args.cameras or ("LATISS" if q else ",".join(CAMERAS))).split(",") if c.strip()]
    for c in cams:
        if c not in CAMERAS:
            raise SystemExit(f"hs-bench: unknown camera {c!r} (one of {', '.join(CAMERAS)})")
    n = args.exposures if args.exposures is not None else (8 if q else 200)
    rates = [float(r) for r in (args.ingest_rates or ("1000,3000" if q else "1000,5000,10000,20000,30000,40000,50000,60000,80000,100000")).split(",")]
    return Plan(
        cameras=cams,
        exposures=max(n, 1),
        overlap_exposures=4 if q else 30,
        side_exposures=4 if q else 50,
        speed=args.speed if args.speed is not None else (20.0 if q else 10.0),
        ingest_rates=rates,
        ingest_step_s=args.ingest_step if args.ingest_step is not None else (3.0 if q else 5.0),
        ingest_sustain_s=args.ingest_sustain if args.ingest_sustain is not None else (0.0 if q else 60.0),
        floor_reps=5 if q else 20,
        hop_count=50 if q else 300,
        ddsperf_s=2.0 if q else 5.0,
        wait_s=15.0 if q else 30.0,
    )


def log(msg: str) -> None:
    print(f"hs-bench: {msg}", file=sys.stderr, flush=True)


def _tail(dep: Deployment, instrument: str, lines: int = 4) -> dict[str, str]:
    g = GROUPS[instrument]
    out = {}
    for role in group_roles(dep, instrument):
        text = dep.log(f"{g}-{role}").strip().splitlines()
        if text:
            out[role] = "\n".join(text[-lines:])
    return out


def _failure(exc: BaseException, dep: Deployment | None = None, instrument: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    if dep is not None and instrument is not None:
        try:
            out["logs"] = _tail(dep, instrument)
        except OSError:
            pass
    out["trace"] = traceback.format_exc(limit=3).strip().splitlines()[-3:]
    return out


class Instance:
    """One camera instance under its own supervisord, with its probe, memory sampler and player."""

    def __init__(self, base: Path, instrument: str, domain: int, port_offset: int, env: dict[str, str] | None = None, bus: str = "dds"):
        self.instrument = instrument
        self.dep = Deployment(base / "run", base / "annex", domain, port_offset, dict(env or {}), bus=bus)
        self.camera = load_instance(instrument).camera
        self.probe: Probe | None = None
        self.mem: MemorySampler | None = None
        self.player: TimedPlayer | None = None
        self.memory: dict[str, Any] | None = None
        self.forwarder: dict[str, Any] = {}
        self.cache_rtt: dict[str, Any] = {}
        self.last_tai = 0.0
        self.startup_retries = 0

    def up(self, timeout: float = 60.0) -> None:
        self.dep.start()
        try:
            self.dep.start_instance(self.instrument)
        except RuntimeError as exc:  # e.g. a spawn error while the venv's scripts are being reinstalled
            log(f"{self.instrument}: {str(exc).splitlines()[0]}; retrying once in 3 s")
            self.startup_retries += 1
            time.sleep(3.0)
            self.dep.start_instance(self.instrument)
        self.dep.wait_running(self.instrument, timeout)
        self.mem = MemorySampler(self.dep, self.instrument).start()
        self.probe = Probe(self.dep, self.instrument)
        self.probe.wait_ready(timeout)
        self.player = timed_player(self.dep.bus, self.dep.domain, self.camera, {**os.environ, **self.dep.env})

    def night(self, n: int, speed: float, wait_s: float, overlap: bool = False, first_seq: int = 1) -> NightResult:
        assert self.player is not None and self.probe is not None
        start = self.last_tai + 30.0 if self.last_tai else None  # nights follow each other in TAI
        sc = bench_scenario(self.instrument, n, start=start, first_seq=first_seq, overlap=overlap)
        self.last_tai = Night(sc).t_end
        label = "overlap" if overlap else "main"
        r = play_night(self.player, self.probe, sc, speed, label, wait_s)
        if not r.fast_ms and not r.lfo_ms:
            skipped = self.probe.skipped
            why = f"; {len(skipped)} skipped by the composer, e.g. {next(iter(skipped.values()))}" if skipped else ""
            raise RuntimeError(f"no header of the {label} night arrived within {wait_s:.0f} s "
                               f"({len(r.eoit)} endOfImageTelemetry written){why}")  # fmt: skip
        return r

    def stop_observers(self) -> None:
        if self.mem is not None:
            self.memory = self.mem.stop()
            self.mem = None
        if self.probe is not None:
            s = self.probe.close()
            self.probe = None
            if s:
                self.forwarder = {k: s.get(k) for k in ("gaps", "received", "malformed", "hdus", "cards", "errors")}
                pm = s.get("parse_ms") or []
                self.forwarder["parse_to_fitshdr_ms"] = round(sorted(pm)[len(pm) // 2], 2) if pm else None
                self.cache_rtt = ms_summary(s.get("cache_rtt_ms") or [])
        if self.player is not None:
            self.player.close()
            self.player = None

    def header_file(self) -> Path | None:
        files = sorted(self.dep.annex.glob(f"{self.instrument}/*/*.fits"))
        return files[-1] if files else None

    def down(self) -> None:
        try:
            self.stop_observers()
        finally:
            self.dep.stop()


def run_camera(inst: Instance, plan: Plan, res: dict[str, Any], series: dict, keep: dict, ingest_here: bool) -> None:
    name = inst.instrument
    try:
        t0 = time.monotonic()
        log(f"{name}: starting the instance (domain {inst.dep.domain}, port offset {inst.dep.port_offset})")
        inst.up()
        log(f"{name}: up in {time.monotonic() - t0:.1f} s; playing {plan.exposures} exposures at {plan.speed:g}x")
        r = inst.night(plan.exposures, plan.speed, plan.wait_s)
        res["latency"][name] = r.report()
        res["latency"][name]["startup_retries"] = inst.startup_retries
        series[name] = {"fast_path": r.fast_ms, "announcement": r.lfo_ms}
        keep.setdefault("payload", {})[name] = res["latency"][name]["fast_path_payload_bytes"]
        log(f"{name}: fast p99 {res['latency'][name]['fast_path']['p99_ms']} ms, "
            f"announcement p99 {res['latency'][name]['announcement']['p99_ms']} ms")  # fmt: skip
        if plan.overlap_exposures:
            try:
                ro = inst.night(plan.overlap_exposures, plan.speed, plan.wait_s, overlap=True, first_seq=500001)
                res["overlap"]["overlapping_exposures"][name] = ro.report()
                series[f"{name} overlap"] = {"fast_path": ro.fast_ms, "announcement": ro.lfo_ms}
            except Exception as exc:  # noqa: BLE001 - reported, the bench goes on
                res["overlap"]["overlapping_exposures"][name] = _failure(exc, inst.dep, name)
        inst.stop_observers()
        res["memory"][name] = inst.memory
        res["latency"][name]["forwarder"] = inst.forwarder
        res["latency"][name]["cache_status_rtt"] = inst.cache_rtt  # over both nights: cache stalls
        hf = inst.header_file()
        if hf is not None:
            keep.setdefault("files", {})[name] = hf
        if ingest_here:
            res["ingest"] = _ingest(inst, plan)
    except Exception as exc:  # noqa: BLE001 - a failed camera is reported, the others go on
        log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
        res["latency"][name] = _failure(exc, inst.dep, name)
        try:
            inst.stop_observers()
        except Exception:  # noqa: BLE001 - best effort: the memory seen until the failure
            pass
        if inst.memory:
            res["memory"].setdefault(name, inst.memory)
    finally:
        try:
            inst.down()
        except Exception as exc:  # noqa: BLE001
            log(f"{name}: stopping: {exc}")


def _ingest(inst: Instance, plan: Plan) -> dict[str, Any]:
    log(f"ingest ({inst.dep.bus}): stepping {', '.join(f'{r:.0f}' for r in plan.ingest_rates)} samples/s, {plan.ingest_step_s:g} s each"
        + (f", then {plan.ingest_sustain_s:g} s at the best lossless rate" if plan.ingest_sustain_s else ""))
    try:
        if inst.dep.bus == "kafka":
            from tools.bench.ingest_kafka import run_ingest_kafka

            inst.dep.apply_env()
            return run_ingest_kafka(inst.dep, inst.instrument, plan.ingest_rates, plan.ingest_step_s,
                                    plan.ingest_sustain_s, min_tai=inst.last_tai)  # fmt: skip
        out = run_ingest(inst.dep, inst.instrument, plan.ingest_rates, plan.ingest_step_s, plan.ingest_sustain_s,
                         min_tai=inst.last_tai)  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        return _failure(exc, inst.dep, inst.instrument)
    return out


def run_ingest_alone(base: Path, domain: int, offset: int, plan: Plan, env: dict[str, str], bus: str = "dds") -> dict[str, Any]:
    inst = Instance(base, "LATISS", domain, offset, env, bus)
    try:
        inst.dep.start()
        inst.dep.start_instance("LATISS")
        inst.dep.wait_running("LATISS", 60)
        time.sleep(2.0)
        return _ingest(inst, plan)
    except Exception as exc:  # noqa: BLE001
        return _failure(exc, inst.dep, "LATISS")
    finally:
        inst.dep.stop()


def own_topics(env: dict[str, str], bus: str, tag: str) -> dict[str, str]:
    """An instance's environment with topics of its own: on Kafka the subname ``<subname>-<tag>``
    (as each instance has its own domain on DDS), so that no run reads another's backlog (a fresh
    consumer group starts at the first record: the ingest step's millions of samples)."""
    if bus != "kafka":
        return dict(env)
    base = env.get("LSST_TOPIC_SUBNAME") or os.environ.get("LSST_TOPIC_SUBNAME") or "sal"
    return {**env, "LSST_TOPIC_SUBNAME": f"{base}-{tag}"}


def run_side_by_side(base: Path, domain: int, offset: int, plan: Plan, res: dict[str, Any], series: dict,
                     env: dict[str, str], bus: str = "dds") -> dict[str, Any]:  # fmt: skip
    """ComCam and LSSTCam at once on one machine: on DDS each on its own domain, on Kafka each under
    its own topic subname on the one broker (``<subname>-side-<camera>``)."""
    envs = {n: own_topics(env, bus, f"side-{n}") for n in ("ComCam", "LSSTCam")}
    insts = {n: Instance(base / f"side-{n}", n, domain + k, offset + 100 * k, envs[n], bus) for k, n in enumerate(("ComCam", "LSSTCam"))}
    where = "distinct topic subnames on one Kafka broker" if bus == "kafka" else "distinct DDS domains"
    out: dict[str, Any] = {"status": "ok", "setup": f"two supervisord deployments on {where}, one machine, "
                           "nights played concurrently by two players of the bench process"}  # fmt: skip
    try:
        for inst in insts.values():
            inst.dep.start()
            inst.dep.start_instance(inst.instrument)
        for inst in insts.values():
            inst.dep.wait_running(inst.instrument, 60)
        for inst in insts.values():
            inst.mem = MemorySampler(inst.dep, inst.instrument).start()
            inst.probe = Probe(inst.dep, inst.instrument)
        for inst in insts.values():
            inst.probe.wait_ready(60)
            inst.player = timed_player(bus, inst.dep.domain, inst.camera, {**os.environ, **inst.dep.env})
        results: dict[str, Any] = {}

        def play(inst: Instance) -> None:
            try:
                results[inst.instrument] = inst.night(plan.side_exposures, plan.speed, plan.wait_s)
            except Exception as exc:  # noqa: BLE001
                results[inst.instrument] = _failure(exc, inst.dep, inst.instrument)

        threads = [threading.Thread(target=play, args=(i,)) for i in insts.values()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for name, r in results.items():
            if isinstance(r, NightResult):
                out[name] = r.report()
                series[f"{name} side-by-side"] = {"fast_path": r.fast_ms, "announcement": r.lfo_ms}
            else:
                out[name] = r
                out["status"] = "partial"
        for inst in insts.values():
            inst.stop_observers()
            res["memory"][f"{inst.instrument} side-by-side"] = inst.memory
    except Exception as exc:  # noqa: BLE001
        out = {**out, **_failure(exc)}
    finally:
        for inst in insts.values():
            try:
                inst.down()
            except Exception as exc:  # noqa: BLE001
                log(f"side by side {inst.instrument}: stopping: {exc}")
    return out


def run_floor(plan: Plan, res: dict[str, Any], keep: dict, domain: int) -> dict[str, Any]:
    out: dict[str, Any] = {"definition": {
        "fast_path": "DDS hop (endOfImageTelemetry) + ZMQ hop (header)",
        "announcement": "DDS hop + ZMQ hop (header) + the same header bytes written, made durable and MD5'd",
        "dds_hop": "ddsperf ping/pong half round trip (C, two processes), p50",
        "zmq_hop": "pyzmq PUB->SUB over tcp loopback, one process, p50",
        "fitsio_write_md5": "reference, not a floor: fitsio composing and writing the same header, plus MD5",
    }}  # fmt: skip
    try:
        out["dds_hop_ddsperf"] = ddsperf.roundtrip(domain, plan.ddsperf_s, size=300)
    except Exception as exc:  # noqa: BLE001
        out["dds_hop_ddsperf"] = _failure(exc)
    try:
        out["dds_hop_python"] = floor.dds_hop_python(domain + 1, plan.hop_count)
    except Exception as exc:  # noqa: BLE001
        out["dds_hop_python"] = _failure(exc)
    out["zmq_hop_event"] = floor.zmq_hop(EVENT_BYTES, plan.hop_count)
    out["zmq_hop_header"] = {}
    out["fitsio_write_md5"] = {}
    out["durable_write_md5"] = {}
    out["per_camera"] = {}
    dds = out["dds_hop_ddsperf"].get("hop_p50_ms") or out["dds_hop_python"].get("p50_ms")
    for name, path in (keep.get("files") or {}).items():
        try:
            size = (keep.get("payload") or {}).get(name) or path.stat().st_size
            zh = out["zmq_hop_header"][name] = floor.zmq_hop(int(size), max(plan.hop_count // 3, 20))
            out["fitsio_write_md5"][name] = floor.fitsio_write_md5(path, plan.floor_reps)
            dw = out["durable_write_md5"][name] = floor.durable_write_md5(path, plan.floor_reps)
            if dds is None:
                continue
            fast = dds + zh["p50_ms"]
            ann, ann99 = fast + dw["p50_ms"], fast + dw["p99_ms"]
            lat = res["latency"].get(name) or {}
            out["per_camera"][name] = {
                "fast_path_ms": round(fast, 3),
                "announcement_ms": round(ann, 3),
                "announcement_p99_ms": round(ann99, 3),
                "fast_path_ratio_p50": ratio(lat.get("fast_path", {}).get("p50_ms"), fast),
                "fast_path_ratio_p99": ratio(lat.get("fast_path", {}).get("p99_ms"), fast),
                "announcement_ratio_p50": ratio(lat.get("announcement", {}).get("p50_ms"), ann),
                "announcement_ratio_p99": ratio(lat.get("announcement", {}).get("p99_ms"), ann99),
            }
        except Exception as exc:  # noqa: BLE001
            out["per_camera"][name] = _failure(exc)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hs-bench", description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 when the bench ran (targets met or not), 1 when it could not.")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smoke version: LATISS, 8 exposures, short ingest (< 1 min)")
    p.add_argument("--cameras", help="comma-separated subset of LATISS,ComCam,LSSTCam (default all; LATISS with --quick)")
    p.add_argument("--exposures", type=int, help="exposures per camera (default 200; 8 with --quick)")
    p.add_argument("--speed", type=float, help="simulated clock speed (default 10x; 20x with --quick)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the JSON there instead of stdout")
    p.add_argument("--plot", type=Path, default=Path("bench-latency.png"), metavar="FILE",
                   help="PNG of the latency distributions (default ./bench-latency.png)")  # fmt: skip
    p.add_argument("--domain-base", type=int, default=int(os.environ.get("HS_BENCH_DOMAIN", "160")),
                   help="first of the 10 DDS domain ids the bench uses (default 160; keep within 150-200)")  # fmt: skip
    p.add_argument("--port-offset", type=int, default=int(os.environ.get("HS_BENCH_PORT_OFFSET", "26000")),
                   help="base port offset of the bench's instances (default 26000, ports below the kernel's "
                        "ephemeral range; each gets +100)")  # fmt: skip
    p.add_argument("--ingest-rates", metavar="R1,R2,...", help="ingest steps in samples/s")
    p.add_argument("--ingest-step", type=float, metavar="SEC", help="seconds per ingest step (default 5; 3 with --quick)")
    p.add_argument("--ingest-sustain", type=float, metavar="SEC",
                   help="seconds of the final run at the best lossless rate (default 60; 0 with --quick)")  # fmt: skip
    p.add_argument("--no-side-by-side", action="store_true", help="skip ComCam + LSSTCam side by side")
    p.add_argument("--bus", default="dds", metavar="dds|kafka|dds,kafka",
                   help="SAL transport (default dds); kafka starts the embedded bus unless LSST_KAFKA_BROKER_ADDR is set; "
                        "dds,kafka runs the bench on each and compares them")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the run folders, logs and annexes")
    p.add_argument("--annex", choices=("local", "s3"), default="local",
                   help="where the instances write headers: a local folder (default) or S3 (a moto server on loopback)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the whole bench N times; each figure is the median of the runs, with its min-max spread")  # fmt: skip
    return p


def _kafka_bus(tmp: Path) -> tuple[Any, dict[str, str]]:
    """The bus to bench on: the one LSST_KAFKA_BROKER_ADDR names, else the embedded one."""
    if os.environ.get("LSST_KAFKA_BROKER_ADDR"):
        return None, {}
    from tools import kafka_local

    kafka = kafka_local.start(tmp / "kafka")
    log(f"embedded Kafka bus: broker {kafka.broker_addr}, registry {kafka.registry_url}")
    return kafka, kafka.env(os.environ.get("LSST_TOPIC_SUBNAME") or "sal")


def run_once(args: argparse.Namespace, plan: Plan, argv: list[str]) -> tuple[dict[str, Any], dict]:
    """One whole bench run: every camera, ingest, side by side, floor. Returns the result and the
    latency series for the plot."""
    t_run = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="hs-bench-"))
    dom, off = args.domain_base, args.port_offset
    s3 = MotoServer(log=tmp / "moto.log").start() if args.annex == "s3" else None
    env = {**s3.env, "HS_ANNEX": "s3"} if s3 is not None else {}
    res: dict[str, Any] = {
        "bench": {
            "version": 1,
            "argv": argv,
            "quick": args.quick,
            "annex": args.annex,
            "cameras": plan.cameras,
            "exposures": plan.exposures,
            "speed": plan.speed,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg()), "python": platform.python_version(),
                     "platform": platform.platform()},  # fmt: skip
            "domains": f"{dom}..{dom + 9}",
            "measuring_nice": BOOST if os.geteuid() == 0 else 0,  # player thread and probe; the instance runs at 0
            "run_dir": str(tmp) if args.keep else None,
            "bus": args.bus,
        },
        "latency": {},
        "overlap": {"overlapping_exposures": {}, "side_by_side": None},
        "floor": {},
        "ingest": {},
        "memory": {},
    }
    series: dict[str, dict[str, list[float]]] = {}
    keep: dict[str, Any] = {}
    phases: dict[str, float] = {}
    kafka = None
    bus_env: dict[str, str] = {}
    try:
        if args.bus == "kafka":
            kafka, bus_env = _kafka_bus(tmp)
        on_kafka = args.bus == "kafka"
        ingest_done = False
        for k, name in enumerate(plan.cameras):
            t0 = time.monotonic()
            here = name == "LATISS"
            cam_env = own_topics({**env, **bus_env}, args.bus, name)
            run_camera(Instance(tmp / name, name, dom + k, off + 100 * k, cam_env, args.bus), plan, res, series, keep, here)
            ingest_done = ingest_done or (here and bool(res["ingest"]))
            phases[name] = round(time.monotonic() - t0, 1)
        if not ingest_done:
            t0 = time.monotonic()
            res["ingest"] = run_ingest_alone(tmp / "ingest", dom + 5, off + 500, plan, {**env, **bus_env}, args.bus)
            phases["ingest"] = round(time.monotonic() - t0, 1)
        if res["ingest"].get("status") == "ok" and not on_kafka:
            size = res["ingest"].get("sample_bytes", 64)
            dp = ddsperf.throughput(dom + 6, max(plan.ddsperf_s, 3.0), size=size)
            res["ingest"]["ddsperf"] = dp
            ours = res["ingest"]["sustained_per_s"] or res["ingest"]["max_lossless_step_per_s"]
            res["ingest"]["ratio_to_ddsperf"] = ratio(ours, dp.get("samples_per_s"), 4)
        if {"ComCam", "LSSTCam"} <= set(plan.cameras) and not args.no_side_by_side:
            t0 = time.monotonic()
            log(f"ComCam and LSSTCam side by side: {plan.side_exposures} exposures each")
            res["overlap"]["side_by_side"] = run_side_by_side(tmp / "side", dom + 3, off + 300, plan, res, series,
                                                              {**env, **bus_env}, args.bus)  # fmt: skip
            phases["side_by_side"] = round(time.monotonic() - t0, 1)
        else:
            res["overlap"]["side_by_side"] = {"status": "skipped", "reason": "needs --cameras with ComCam and LSSTCam"}
        t0 = time.monotonic()
        log("floor: ddsperf ping/pong, ZeroMQ hops, fitsio + MD5")
        res["floor"] = run_floor(plan, res, keep, dom + 7)
        if on_kafka:
            from protocols.kafka_config import settings_from_env
            from tools.bench.kafka_floor import raw_rate

            log("floor: the Kafka broker's raw rate (plain confluent-kafka producer and consumer)")
            try:
                res["floor"]["kafka_raw"] = raw_rate(settings_from_env({**os.environ, **bus_env}, default_subname="sal"))
            except Exception as exc:  # noqa: BLE001 - reported, the bench goes on
                res["floor"]["kafka_raw"] = _failure(exc)
            if res["ingest"].get("status") == "ok":
                ours = res["ingest"]["sustained_per_s"] or res["ingest"]["max_lossless_step_per_s"]
                res["ingest"]["ratio_to_kafka_raw"] = ratio(ours, res["floor"]["kafka_raw"].get("end_to_end_per_s"), 4)
        phases["floor"] = round(time.monotonic() - t0, 1)
    except KeyboardInterrupt:
        log("interrupted")
        res["bench"]["interrupted"] = True
    finally:
        if kafka is not None:
            kafka.stop()
        if s3 is not None:
            s3.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res["targets"] = evaluate(res)
    res["bench"]["phases_s"] = phases
    res["bench"]["wall_s"] = round(time.monotonic() - t_run, 1)
    return res, series


def bench_bus(args: argparse.Namespace, plan: Plan, argv: list[str], plot: Path) -> tuple[dict[str, Any], dict]:
    """The whole bench on ``args.bus``, ``--repeat`` times folded into one result; the plot written."""
    runs: list[dict[str, Any]] = []
    series: dict[str, dict[str, list[float]]] = {}
    for k in range(args.repeat):
        if args.repeat > 1:
            log(f"run {k + 1} of {args.repeat} ({args.bus})")
        res, run_series = run_once(args, plan, argv)
        runs.append(res)
        for name, paths in run_series.items():
            for path, values in paths.items():
                series.setdefault(name, {}).setdefault(path, []).extend(values)
        if res["bench"].get("interrupted"):
            break
    if len(runs) > 1:
        res, spread = fold(runs)
        res["bench"]["repeat"] = {"runs": len(runs), "spread": spread,
                                  "loadavg": [r["bench"]["host"]["loadavg"] for r in runs],
                                  "wall_s": [r["bench"]["wall_s"] for r in runs]}  # fmt: skip
        res["runs"] = [{k: r[k] for k in ("targets", "bench")} for r in runs]
    else:
        res, spread = runs[0], {}
    res["targets"] = evaluate(res)
    floors = {n: v for n, v in (res["floor"].get("per_camera") or {}).items() if isinstance(v, dict) and "fast_path_ms" in v}
    try:
        write_plot(plot, series, {n: {"fast_path": v["fast_path_ms"], "announcement": v["announcement_ms"]} for n, v in floors.items()},
                   res.get("ingest"), f"hs-bench {', '.join(plan.cameras)} on {args.bus}: {plan.exposures} exposures at {plan.speed:g}x "
                   f"x {len(runs)} run(s) on {os.cpu_count()} CPUs ({res['bench']['started']})")  # fmt: skip
        res["plot"] = str(plot.resolve())
    except Exception as exc:  # noqa: BLE001
        res["plot"] = None
        res["plot_error"] = f"{type(exc).__name__}: {exc}"
    return res, spread


def parse_buses(value: str) -> list[str]:
    buses = [b.strip() for b in value.split(",") if b.strip()]
    if not buses or any(b not in ("dds", "kafka") for b in buses) or len(set(buses)) != len(buses):
        raise SystemExit(f"hs-bench: --bus {value!r}: dds, kafka or dds,kafka")
    return buses


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit(f"hs-bench: --repeat must be at least 1, not {args.repeat}")
    buses = parse_buses(args.bus)
    plan = make_plan(args)
    sys.setswitchinterval(0.0005)  # the player's timestamps must not wait for another thread's time slice
    os.environ.setdefault("CYCLONEDDS_URI", LOOPBACK_XML.as_uri())
    t_start = time.monotonic()
    argv_used = sys.argv[1:] if argv is None else argv
    results: dict[str, dict[str, Any]] = {}
    spreads: dict[str, dict[str, list[float]]] = {}
    for bus in buses:
        plot = args.plot if len(buses) == 1 else args.plot.with_name(f"{args.plot.stem}-{bus}{args.plot.suffix}")
        results[bus], spreads[bus] = bench_bus(argparse.Namespace(**{**vars(args), "bus": bus}), plan, argv_used, plot)
        if results[bus]["bench"].get("interrupted"):
            break
    for res in results.values():
        res["bench"]["wall_s"] = round(time.monotonic() - t_start, 1) if len(results) == 1 else res["bench"]["wall_s"]
    out: dict[str, Any] = next(iter(results.values())) if len(results) == 1 else {
        "buses": results, "comparison": comparison(results), "wall_s": round(time.monotonic() - t_start, 1)}  # fmt: skip
    text = json.dumps(out, indent=1, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text, flush=True)
    for bus, res in results.items():
        if len(results) > 1:
            print(f"hs-bench on {bus}:", file=sys.stderr)
        print(summary_text(res), file=sys.stderr, flush=True)
        if spreads[bus]:
            print(spread_text(spreads[bus], res["bench"]["repeat"]["runs"]), file=sys.stderr, flush=True)
    if len(results) > 1:
        print(compare_text(results), file=sys.stderr, flush=True)
    ran = any(isinstance(v, dict) and v.get("status") == "ok" for res in results.values() for v in res["latency"].values())
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
