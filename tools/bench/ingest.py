"""Ingest: the highest telemetry rate the listener and cache take without losing a sample.

A DDS writer in the bench writes ESS:301 temperature (a topic every instance subscribes to, for
AIRTEMP) at stepped rates; after each step the cache's ROUTER is asked ``{"op": "status"}`` and its
cumulative sample count compared with what was written: lost = written - received. The cache's
``gaps`` count tells the ZeroMQ losses (listener -> cache) from the DDS ones (writer -> listener,
a reader history overflowing while the listener is behind). Nothing else is written on the domain
during the ingest, so every sample the cache counts is one of ours. The writer paces itself and,
when the OS delays it, never catches up with more than 20 ms worth of samples in one burst (a steady
sender), so it may fall short of the requested rate: its achieved rate is reported next to it.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Iterator

import psutil

from protocols import sal
from protocols.envelope import Sender, sender_id
from protocols.messages import CacheClient, CacheUnavailable, StatusRequest
from protocols.timescale import tai_now
from tools.bench.latency import boost, unboost
from tools.runner import GROUPS, Deployment

COMPONENT, TOPIC, INDEX = "ESS", "temperature", 301
TOPIC_KEY = "ESS.temperature:301"
MAX_BURST_S = 0.02  # at most 20 ms worth of samples written back to back after the writer was descheduled
SUSTAIN_TRIES = 3  # the best lossless step rate, then the next lower ones


def _field_offset(sample: Any, name: str, a: float, b: float) -> int:
    """Byte offset of a float64 field in the sample's CDR: where serializing two values differs."""
    setattr(sample, name, a)
    x = sample.serialize()
    setattr(sample, name, b)
    y = sample.serialize()
    diff = [i for i in range(min(len(x), len(y))) if x[i] != y[i]]
    at = diff[-1] - 7 if diff else -1  # little-endian: the exponent bytes differ, the last two
    if len(x) != len(y) or at < 0 or struct.unpack_from("<d", x, at)[0] != a or struct.unpack_from("<d", y, at)[0] != b:
        raise RuntimeError(f"cannot locate {name} in the serialized sample")
    return at


class Writer:
    """The ingest's DDS writer. It stands for the bus, not for anything under test, so it writes as
    fast as Cyclone DDS allows from Python: the sample is serialized once and each write patches its
    private_sndStamp, private_seqNum and timestamp in the bytes before handing them to the writer
    (what DataWriter.write does after serializing)."""

    def __init__(self, domain: int, min_tai: float = 0.0):
        sal.ensure_loopback_dds()
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.topic import Topic

        st = sal.get_topic(COMPONENT, TOPIC)
        qos = sal.qos_for(st.kind)
        self.dp = DomainParticipant(domain)
        self.writer = DataWriter(self.dp, Topic(self.dp, st.dds_name, sal.idl_class(COMPONENT, TOPIC), qos=qos), qos=qos)
        self.sample = sal.make_sample(COMPONENT, TOPIC, INDEX, numChannels=4, temperatureItem=[11.5] * 16,
                                      sensorName="bench", location="hs-bench", private_identity="ESS:301")  # fmt: skip
        self.seq = 0
        self.template = bytearray(self.sample.serialize())
        self.template.extend(b"\0" * ((-len(self.template)) % 4))
        self.at_snd = _field_offset(self.sample, "private_sndStamp", 1.0, 2.0)
        self.at_ts = _field_offset(self.sample, "timestamp", 1.0, 2.0)
        self.at_seq = self.at_snd + 16  # private_rcvStamp (float64), then private_seqNum (int32)
        self.sample.private_seqNum = 0x01020304
        if self.sample.serialize()[self.at_seq : self.at_seq + 4] != struct.pack("<i", 0x01020304):
            raise RuntimeError("unexpected CDR layout of the ingest topic")
        try:
            from cyclonedds._clayer import ddspy_write

            self.raw_write = ddspy_write
        except ImportError:  # another binding version: the public write
            self.raw_write = None
        # stamps follow the wall clock, shifted to come after the nights already played (the cache appends)
        self.offset = max(0.0, min_tai + 1.0 - tai_now())

    @property
    def sample_bytes(self) -> int:
        return len(self.sample.serialize())

    def wait_matched(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.writer.get_publication_matched_status().current_count > 0:
                return True
            time.sleep(0.05)
        return False

    def run(self, rate: float, seconds: float) -> tuple[int, float]:
        """Write at ``rate`` samples/s for ``seconds``; (samples written, seconds taken)."""
        s, w = self.sample, self.writer
        n = 0
        start = time.perf_counter()
        for burst in paced(rate, seconds):
            tai = tai_now() + self.offset
            if self.raw_write is not None:
                buf, ref = self.template, w._ref
                struct.pack_into("<d", buf, self.at_snd, tai)
                struct.pack_into("<d", buf, self.at_ts, tai)
                for _ in range(burst):
                    self.seq += 1
                    struct.pack_into("<i", buf, self.at_seq, self.seq)
                    if self.raw_write(ref, bytes(buf)) < 0:
                        raise RuntimeError("DDS write failed")
            else:
                for _ in range(burst):
                    self.seq += 1
                    s.private_seqNum = self.seq
                    s.private_sndStamp = tai
                    s.timestamp = tai
                    w.write(s)
            n += burst
        return n, time.perf_counter() - start


def paced(rate: float, seconds: float) -> Iterator[int]:
    """The number of samples due at each moment of ``seconds`` of writing at ``rate``/s: a writer
    writes each burst at once. Fallen behind (descheduled) by more than MAX_BURST_S, the pace is
    shifted rather than caught up in one burst, as a steady sender would."""
    n = 0
    cap = max(1, int(rate * MAX_BURST_S))
    start = t0 = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - start >= seconds:
            return
        due = int((now - t0) * rate)
        if due - n > cap:
            t0 += (due - n - cap) / rate
            due = n + cap
        burst = due - n
        if burst <= 0:
            time.sleep(0.0002)
            continue
        yield burst
        n += burst


def _cache_counts(client: CacheClient) -> dict[str, int]:
    reply = client.request(StatusRequest())
    counts = reply.get("counts", {})
    return {"samples": int(counts.get("samples", 0)), "gaps": int(counts.get("gaps", 0)),
            "bad_messages": int(counts.get("bad_messages", 0)),
            "topic_kept": int(reply.get("topics", {}).get(TOPIC_KEY, 0))}  # fmt: skip


def _settled(client: CacheClient, expect: int, base: int, timeout: float) -> dict[str, int]:
    """Cache counts once it has everything or has stopped counting for a second."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        c = _cache_counts(client)
        now = time.monotonic()
        if c["samples"] - base >= expect or now > deadline:
            return c
        if c["samples"] != last:
            last, since = c["samples"], now
        elif now - since > 1.0:
            return c
        time.sleep(0.1)


class CpuMeter:
    """CPU seconds used by the listener, the cache and the writer (this process) over a step."""

    def __init__(self, dep: Deployment, instrument: str):
        g = GROUPS[instrument]
        self.procs: dict[str, psutil.Process] = {"writer": psutil.Process()}
        for role in ("listener", "cache"):
            try:
                self.procs[role] = psutil.Process(dep.pid(f"{g}:{g}-{role}"))
            except (RuntimeError, ValueError, psutil.Error):
                pass
        self.t0: dict[str, float] = {}
        self.w0 = 0.0

    def _cpu(self) -> dict[str, float]:
        out = {}
        for k, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[k] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def start(self) -> None:
        self.t0, self.w0 = self._cpu(), time.monotonic()

    def percent(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.w0, 1e-6)
        return {k: round(100.0 * (v - self.t0.get(k, v)) / wall, 1) for k, v in self._cpu().items()}

    def seconds(self) -> dict[str, float]:
        """CPU seconds used since :meth:`start`."""
        return {k: v - self.t0.get(k, v) for k, v in self._cpu().items()}


def step(writer: Writer, client: CacheClient, rate: float, seconds: float, cpu: CpuMeter | None = None) -> dict[str, Any]:
    before = _cache_counts(client)
    if cpu:
        cpu.start()
    boosted = boost()  # the writer stands for the bus's other machines: it should not wait for a core
    try:
        written, took = writer.run(rate, seconds)
    finally:
        if boosted:
            unboost()
    after = _settled(client, written, before["samples"], timeout=max(10.0, seconds))
    received = after["samples"] - before["samples"]
    lost = max(written - received, 0)
    zmq_lost = after["gaps"] - before["gaps"]
    return {
        "requested_per_s": rate,
        "achieved_per_s": round(written / took, 1),
        "seconds": round(took, 2),
        "written": written,
        "received": received,
        "lost": lost,
        "lost_zeromq": zmq_lost,
        "lost_dds": max(lost - zmq_lost, 0),
        "writer_limited": written / took < 0.97 * rate,
        "cpu_percent": cpu.percent() if cpu else None,  # over the step and the cache's catching up
        # CPU per sample received: the Python and DDS cost of each process, whatever the machine's load
        "cpu_us_per_sample": {k: round(v * 1e6 / max(received, 1), 2) for k, v in cpu.seconds().items()} if cpu else None,
    }


def run_ingest(
    dep: Deployment, instrument: str, rates: list[float], step_s: float, sustain_s: float, min_tai: float = 0.0,
    writer: Any = None,  # noqa: ANN401 - another bus's writer with Writer's interface (tools/bench/ingest_kafka.py)
) -> dict[str, Any]:
    ep = dep.endpoints(instrument)
    client = CacheClient(ep.cache_router, Sender(sender_id("bench", instrument)), timeout_s=5.0)
    writer = writer if writer is not None else Writer(dep.domain, min_tai)
    try:
        if not writer.wait_matched(10.0):
            return {"status": "failed", "reason": f"no listener matched {COMPONENT}:{INDEX}.{TOPIC} on domain {dep.domain}"}
        time.sleep(0.5)
        cpu = CpuMeter(dep, instrument)
        steps = []
        for rate in rates:
            steps.append(step(writer, client, rate, step_s, cpu))
            if steps[-1]["lost"] > 0:
                break  # higher rates only lose more
        clean = sorted((s for s in steps if s["lost"] == 0), key=lambda s: -s["achieved_per_s"])
        best = clean[0] if clean else None
        runs: list[dict[str, Any]] = []
        for cand in clean[:SUSTAIN_TRIES] if sustain_s > 0 else []:
            # losses are sporadic (a stall longer than the reader history): a short step without
            # loss may still lose over a minute; then the next lower lossless rate is tried
            runs.append(step(writer, client, cand["requested_per_s"], sustain_s, cpu))
            if runs[-1]["lost"] == 0:
                break
        sustain = next((r for r in runs if r["lost"] == 0), runs[-1] if runs else None)
        sustained = sustain is not None and sustain["lost"] == 0
        return {
            "status": "ok",
            "instrument": instrument,
            "topic": TOPIC_KEY,
            "sample_bytes": writer.sample_bytes,
            "steps": steps,
            "max_lossless_step_per_s": best["achieved_per_s"] if best else 0.0,
            "sustain": sustain,
            "sustain_runs": runs,
            "sustained_per_s": sustain["achieved_per_s"] if sustained else 0.0,
            "note": "received = cache status counts.samples delta (its per-topic history is capped at cache_max_samples)",
        }
    except CacheUnavailable as exc:
        return {"status": "failed", "reason": str(exc)}
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.ingest --rates 20000,40000,60000 --step 5``: the ingest step of hs-bench
    alone, on a LATISS instance of its own, printing the steps as JSON."""
    import argparse
    import json
    import os
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from protocols.sal import LOOPBACK_XML
    from tools.bench.main import run_ingest_alone

    p = argparse.ArgumentParser(prog="python -m tools.bench.ingest", description=main.__doc__)
    p.add_argument("--rates", default="20000,30000,40000,50000,60000", metavar="R1,R2,...")
    p.add_argument("--step", type=float, default=5.0, metavar="SEC")
    p.add_argument("--sustain", type=float, default=0.0, metavar="SEC", help="then this long at the best lossless rate")
    p.add_argument("--domain", type=int, default=229)
    p.add_argument("--port-offset", type=int, default=27200)
    args = p.parse_args(argv)
    os.environ.setdefault("CYCLONEDDS_URI", LOOPBACK_XML.as_uri())
    plan = SimpleNamespace(ingest_rates=[float(r) for r in args.rates.split(",")], ingest_step_s=args.step,
                           ingest_sustain_s=args.sustain)  # fmt: skip
    out = run_ingest_alone(Path(tempfile.mkdtemp(prefix="hs-ingest-")), args.domain, args.port_offset, plan, {})  # type: ignore[arg-type]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
