"""Raw Cyclone DDS figures from ddsperf (Debian cyclonedds-tools) on loopback, own domain id.

Runs with the project's CYCLONEDDS_URI (protocols/cyclonedds-loopback.xml) like every other DDS
participant of the bench. ``throughput``: one ``pub`` and one ``sub`` process, samples/s read from
the subscriber's per-second lines (``... rate 834.32 kS/s ...``). ``roundtrip``: ``ping``/``pong``,
round-trip times read from the pinger's lines (``... 50% 28.888us 90% ... 99% 67.795us max ...``);
one hop is half a round trip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Any

from protocols.sal import LOOPBACK_XML
from tools.bench.stats import summary

_RATE = re.compile(r"size (\d+) total (\d+) lost (\d+) delta (\d+) lost (\d+) rate ([\d.]+) kS/s")
_PING = re.compile(r"mean ([\d.]+)us min ([\d.]+)us 50% ([\d.]+)us 90% ([\d.]+)us 99% ([\d.]+)us max ([\d.]+)us cnt (\d+)")


def ddsperf_path() -> str | None:
    return shutil.which("ddsperf") or ("/usr/bin/ddsperf" if os.path.exists("/usr/bin/ddsperf") else None)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CYCLONEDDS_URI", LOOPBACK_XML.as_uri())
    return env


def _pair(exe: str, domain: int, seconds: float, server: list[str], client: list[str]) -> str:
    """Start ``server`` mode, then run ``client`` mode for ``seconds``; the client's output."""
    dur = str(max(1, int(round(seconds))))
    srv = subprocess.Popen([exe, "-i", str(domain), "-D", str(int(dur) + 2), *server], env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.3)
        out = subprocess.run([exe, "-i", str(domain), "-D", dur, *client], env=_env(), capture_output=True,
                             text=True, timeout=seconds + 30)  # fmt: skip
        return out.stdout + out.stderr
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def throughput(domain: int, seconds: float, size: int = 64) -> dict[str, Any]:
    """Raw samples/s of one reliable publisher to one subscriber (ddsperf pub/sub)."""
    exe = ddsperf_path()
    if exe is None:
        return {"status": "not available", "reason": "ddsperf not installed (Debian package cyclonedds-tools)"}
    size = max(size, 12)
    text = _pair(exe, domain, seconds, ["pub", "size", str(size)], ["sub"])
    rates = [float(m.group(6)) * 1000.0 for m in _RATE.finditer(text)]
    lost = sum(int(m.group(5)) for m in _RATE.finditer(text))
    if not rates:
        return {"status": "failed", "reason": f"no rate lines in ddsperf output: {text[-500:]!r}"}
    steady = rates[1:] if len(rates) > 2 else rates  # the first second includes discovery
    steady = sorted(steady)
    return {
        "status": "ok",
        "samples_per_s": round(steady[len(steady) // 2]),
        "max_samples_per_s": round(max(rates)),
        "per_second": [round(r) for r in rates],
        "lost": lost,
        "size_bytes": size,
        "seconds": seconds,
        "command": f"ddsperf -i {domain} -D {int(round(seconds))} pub size {size}  &  ddsperf -i {domain} -D {int(round(seconds))} sub",
    }


def roundtrip(domain: int, seconds: float, size: int = 64, rate_hz: int = 1000) -> dict[str, Any]:
    """One DDS hop (half a ping/pong round trip) in ms: p50/p99 of the per-second lines."""
    exe = ddsperf_path()
    if exe is None:
        return {"status": "not available", "reason": "ddsperf not installed (Debian package cyclonedds-tools)"}
    size = max(size, 12)
    text = _pair(exe, domain, seconds, ["pong"], ["ping", f"{rate_hz}Hz", "size", str(size)])
    rows = [m for m in _PING.finditer(text)]
    if not rows:
        return {"status": "failed", "reason": f"no ping lines in ddsperf output: {text[-500:]!r}"}
    half = lambda col: [float(m.group(col)) / 2000.0 for m in rows]  # us round trip -> ms one way  # noqa: E731
    p50 = summary(half(3), 4)["p50"]
    return {
        "status": "ok",
        "hop_p50_ms": p50,
        "hop_p99_ms": summary(half(5), 4)["p50"],  # median over seconds of each second's p99
        "hop_max_ms": max(half(6)),
        "roundtrips": sum(int(m.group(7)) for m in rows),
        "size_bytes": size,
        "command": f"ddsperf -i {domain} pong  &  ddsperf -i {domain} -D {int(round(seconds))} ping {rate_hz}Hz size {size}",
    }
