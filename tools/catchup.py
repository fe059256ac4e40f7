"""hs-catchup: list the exposures the bus saw and regenerate their headers after an outage.

Catch-up uses the same composer code as real time: the composer rebuilds each requested header
from the camera events and telemetry the cache holds (event time, never arrival time) and the
publisher announces it as a new version. The annex index says what was already announced.

  hs-catchup --instance LATISS list [--since ISO --until ISO]
  hs-catchup --instance LATISS regenerate IMAGE [IMAGE ...]
  hs-catchup --instance LATISS regenerate --missing|--incomplete [--since ISO --until ISO]
  hs-catchup --instance LATISS refill --since ISO --until ISO     (bus: kafka)

On Kafka the log holds what the cache may no longer have (pruned, or its disk lost): ``refill``
has the listener read that window again (telemetry from ``telemetry_max_age`` before it, events
from their compacted topics' start) with a consumer of its own that commits nothing, and publish it
to the cache as it would have; then ``list`` and ``regenerate`` work on it as usual.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from astropy.time import Time

from procs.annex import index_path
from procs.journal import AppendLog
from protocols.config import ConfigError, InstanceConfig, load_instance
from protocols.envelope import EnvelopeError, Sender, decode, sender_id
from protocols.messages import (
    Announced,
    CacheClient,
    CacheUnavailable,
    RangeReply,
    RangeRequest,
    RecomposeReply,
    RecomposeRequest,
    RefillReply,
    RefillRequest,
    topic_key,
)


@dataclass
class Exposure:
    image_name: str
    start_tai: float
    announced_version: int | None
    complete: bool | None
    set_aside: str | None = None  # why the publisher set its header aside, if it did
    note: str | None = None  # why the composer wrote no header for it (skipped, set aside)
    regenerable: bool = True  # False for what is not an image of its own (spoofed end, reused name)

    @property
    def status(self) -> str:
        if self.announced_version is None and self.set_aside:
            return f"SET ASIDE: {self.set_aside}"
        if self.announced_version is None:
            return f"NOT ANNOUNCED: {self.note}" if self.note else "NOT ANNOUNCED"
        return f"announced v{self.announced_version} ({'complete' if self.complete else 'INCOMPLETE'})"


def tai_seconds(iso: str) -> float:
    """ISO TAI time to SAL TAI unix seconds."""
    return float(Time(iso, scale="tai").unix_tai)


def read_index(cfg: InstanceConfig) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    path = index_path(cfg)
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("announced"):
                entries[e["imageName"]] = e
    return entries


def read_set_aside(cfg: InstanceConfig) -> dict[str, dict[str, Any]]:
    """Headers the publisher could never write, from ``<annex>/<instrument>/rejected/``:
    imageName -> {version, reason, file} (the latest version set aside)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(cfg.annex_folder) / cfg.instrument / "rejected").glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict):
            out[str(rec.get("imageName"))] = {"version": rec.get("version"), "reason": str(rec.get("reason", "")), "file": path.name}
    return out


def exposures(cfg: InstanceConfig, since: float, until: float) -> list[Exposure]:
    """Every exposure whose startIntegration the cache holds in [since, until], with its status."""
    client = CacheClient(cfg.endpoints.cache_router, Sender(sender_id("catchup", cfg.instrument)))
    reply = client.ask(RangeRequest(topic_key(cfg.camera, "startIntegration"), since, until), RangeReply)
    index = read_index(cfg)
    aside = read_set_aside(cfg)
    out = []
    for s in reply.samples:
        name = s.get("data", {}).get("imageName", "")
        e = index.get(name)
        why = aside.get(name, {}).get("reason")
        out.append(Exposure(name, s["sndStamp"], int(e["version"]) if e else None, bool(e["complete"]) if e else None,
                            set_aside=why))  # fmt: skip
    return sorted(out + not_composed(cfg, out, since, until), key=lambda e: e.start_tai)


def not_composed(cfg: InstanceConfig, listed: list[Exposure], since: float, until: float) -> list[Exposure]:
    """What the composer's history says got no header of its own, with the reason: exposures
    skipped (noted on their line), endOfImageTelemetry for images never started, and second
    exposures under an imageName already used (lines of their own)."""
    by_name = {e.image_name: e for e in listed}
    extra = []
    for rec in AppendLog(Path(cfg.state_dir) / cfg.instrument / "composer-history.jsonl").load():
        name = rec.get("skipped") or rec.get("duplicate")
        if not isinstance(name, str):
            continue
        reason, t = str(rec.get("reason", "")), rec.get("t")
        if "skipped" in rec and name in by_name:
            by_name[name].note = f"skipped: {reason}"
        elif isinstance(t, (int, float)) and since <= t <= until:
            what = "second exposure under this name" if "duplicate" in rec else "set aside"
            extra.append(Exposure(name, float(t), None, None, note=f"{what}: {reason}", regenerable=False))
    return extra


def regenerate(cfg: InstanceConfig, names: list[str], timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Ask the composer to recompose these images; waits for each announcement."""
    ctx = zmq.Context.instance()
    acks = ctx.socket(zmq.SUB)
    acks.setsockopt(zmq.SUBSCRIBE, b"ctl.announced.")
    acks.connect(cfg.endpoints.publisher_pub)
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(cfg.endpoints.composer_router)
    time.sleep(0.3)  # let the subscription reach the publisher
    request = RecomposeRequest(names)
    req.send_multipart(Sender(sender_id("catchup", cfg.instrument)).frames(request.topic(), request.encode()))
    if not req.poll(int(timeout_s * 1000)):
        raise TimeoutError(f"no answer from the composer at {cfg.endpoints.composer_router}")
    results = [r.encode() for r in RecomposeReply.decode(decode(req.recv_multipart()).payload).results]
    waiting = {r["imageName"]: r["version"] for r in results if "version" in r}
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        if acks.poll(200):
            try:
                entry = Announced.decode(decode(acks.recv_multipart()).payload)
            except EnvelopeError:
                continue  # not an announcement this tool can read: not the one it waits for
            if waiting.get(entry.imageName, 1e9) <= entry.version:
                for r in results:
                    if r["imageName"] == entry.imageName:
                        r["url"] = entry.url
                del waiting[entry.imageName]
    for r in results:
        if r["imageName"] in waiting:
            r["error"] = "not announced within the timeout"
    return results


def refill(cfg: InstanceConfig, since: float, until: float, timeout_s: float = 120.0) -> int:
    """Have the Kafka listener publish [since, until] again from the log; the samples published."""
    client = CacheClient(cfg.endpoints.listener_router, Sender(sender_id("catchup", cfg.instrument)), timeout_s=timeout_s, peer="listener")
    return client.ask(RefillRequest(since, until), RefillReply).published


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hs-catchup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instance", default="LATISS")
    p.add_argument("--since", help="TAI ISO time (default: 24 h before the latest exposure)")
    p.add_argument("--until", help="TAI ISO time (default: no limit)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list exposures with their announcement status")
    rg = sub.add_parser("regenerate", help="recompose and re-announce headers")
    rg.add_argument("images", nargs="*")
    rg.add_argument("--missing", action="store_true", help="every exposure in the range not announced")
    rg.add_argument("--incomplete", action="store_true", help="every exposure announced incomplete")
    rg.add_argument("--timeout", type=float, default=120.0)
    sub.add_parser("refill", help="(bus: kafka) have the listener publish --since..--until again from Kafka")
    args = p.parse_args(argv)
    try:
        cfg = load_instance(args.instance)
        since = tai_seconds(args.since) if args.since else 0.0
        until = tai_seconds(args.until) if args.until else 1e12
        if args.cmd == "refill":
            if not (args.since and args.until):
                raise ValueError("refill needs --since and --until (the window to read again)")
            n = refill(cfg, since, until)
            print(f"{n} sample(s) published again from Kafka for {args.since} .. {args.until} TAI")
            time.sleep(1.0)  # the cache stores them as they come
            return 0
        if args.cmd == "list":
            exps = exposures(cfg, since, until)
            for e in exps:
                print(f"{e.image_name:<24} {Time(e.start_tai, format='unix_tai', scale='tai').isot}  {e.status}")
            missing = sum(e.announced_version is None for e in exps)
            listed = {e.image_name for e in exps}
            for name, rec in read_set_aside(cfg).items():
                if name not in listed:  # not a known exposure (e.g. a header PUSHed from elsewhere)
                    print(f"{name[:64]:<24} {'(no exposure on the bus)':<23}  SET ASIDE: {rec['reason']} ({rec['file']})")
            print(f"{len(exps)} exposure(s), {missing} not announced", file=sys.stderr)
            return 0
        names = list(args.images)
        if args.missing or args.incomplete:
            for e in exposures(cfg, since, until):
                if not e.regenerable:
                    continue
                if (args.missing and e.announced_version is None) or (args.incomplete and e.complete is False):
                    names.append(e.image_name)
        if not names:
            print("nothing to regenerate", file=sys.stderr)
            return 0
        ok = True
        for r in regenerate(cfg, sorted(set(names)), args.timeout):
            if "error" in r:
                ok = False
                print(f"{r['imageName']:<24} FAILED: {r['error']}")
            else:
                print(f"{r['imageName']:<24} v{r['version']} {'complete' if r.get('complete') else 'INCOMPLETE'}  {r.get('url', '')}")
        return 0 if ok else 1
    except (ConfigError, CacheUnavailable, TimeoutError, ValueError) as exc:
        print(f"hs-catchup: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
