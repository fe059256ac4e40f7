"""The floor: what the same work costs with the plain tools, measured on this machine in the same run.

- ``fitsio_write_md5``: write the very header the instance produced (every HDU, read back from the
  annex) into a new file with fitsio alone, CHECKSUM/DATASUM included, and take its MD5.
- ``zmq_hop``: one PUB -> SUB hop over tcp loopback with pyzmq, for a small event message and for a
  message the size of the instrument's fast-path header.
- ``dds_hop``: one DDS hop; ``ddsperf`` ping/pong (C, two processes, half the round trip) and a
  Python write -> take of largeFileObjectAvailable between two participants of one process.

- ``durable_write_md5``: the physical floor of the file: the same header bytes written, made durable
  (fsync of file and folder) and their MD5 taken.

Floors of the two paths (p50s added; the announcement's also at p99)::

    fast path    = DDS hop (endOfImageTelemetry) + ZMQ hop (header)
    announcement = DDS hop + ZMQ hop (header) + durable write + MD5 of the same bytes

``fitsio_write_md5`` (fitsio composing and writing the same header) is kept as a reference: it is what a
writer built on fitsio alone would cost, not a floor.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import fitsio
import zmq

from protocols import sal
from tools.bench.stats import ms_summary

_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "CHECKSUM", "DATASUM"}


def _headers(path: Path) -> list[fitsio.FITSHDR]:
    out = []
    with fitsio.FITS(str(path)) as f:
        for hdu in f:
            h = fitsio.FITSHDR()
            for rec in hdu.read_header().records():
                if rec.get("name") not in _STRUCTURAL and not str(rec.get("name") or "").startswith("NAXIS"):
                    h.add_record(rec)
            out.append(h)
    return out


def fitsio_write_md5(path: Path, reps: int) -> dict[str, Any]:
    """Time fitsio writing the header of ``path`` (all HDUs, with checksums) plus the file's MD5."""
    headers = _headers(path)
    times: list[float] = []
    size = 0
    with tempfile.TemporaryDirectory(prefix="hs-bench-fitsio-") as tmp:
        out = os.path.join(tmp, "header.fits")
        for _ in range(reps):
            t0 = time.perf_counter()
            with fitsio.FITS(out, "rw", clobber=True, ignore_empty=True) as f:
                for h in headers:
                    f.write(None, header=h)
                    f[-1].write_checksum()
            with open(out, "rb") as fh:
                data = fh.read()
            hashlib.md5(data).hexdigest()
            times.append((time.perf_counter() - t0) * 1000.0)
            size = len(data)
    return {**ms_summary(times), "hdus": len(headers), "cards": sum(len(h) for h in headers), "bytes": size,
            "source": path.name}  # fmt: skip


def durable_write_md5(path: Path, reps: int) -> dict[str, Any]:
    """Time writing the bytes of ``path`` to a new file, fsync of file and folder, plus their MD5."""
    data = path.read_bytes()
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hs-bench-durable-", dir=path.parent) as tmp:
        for k in range(reps):
            out = os.path.join(tmp, f"header-{k}.fits")
            t0 = time.perf_counter()
            with open(out, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            hashlib.md5(data).hexdigest()
            times.append((time.perf_counter() - t0) * 1000.0)
    return {**ms_summary(times), "bytes": len(data), "source": path.name}


def zmq_hop(size: int, count: int) -> dict[str, Any]:
    """One-way PUB -> SUB latency over tcp 127.0.0.1 for ``size``-byte messages (3 frames, like ours)."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.setsockopt(zmq.SUBSCRIBE, b"hdr.")
        sub.connect(f"tcp://127.0.0.1:{port}")
        body = b"x" * max(size, 1)
        env = b'{"v":1,"seq":1,"t":0.0,"sender":"bench"}'
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # slow joiner: wait until a message gets through
            pub.send_multipart([b"hdr.warm", env, b"x"])
            if sub.poll(50):
                sub.recv_multipart()
                break
        while sub.poll(20):
            sub.recv_multipart()
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            pub.send_multipart([b"hdr.bench", env, body])
            sub.recv_multipart()
            times.append((time.perf_counter() - t0) * 1000.0)
            time.sleep(0.002)
        return {**ms_summary(times), "bytes": size}
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()


def dds_hop_python(domain: int, count: int) -> dict[str, Any]:
    """Python write -> take of largeFileObjectAvailable between two participants of this process."""
    sal.ensure_loopback_dds()
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    csc = "ATHeaderService"
    st = sal.get_topic(csc, "largeFileObjectAvailable")
    qos = sal.qos_for(st.kind)
    cls = sal.idl_class(csc, "largeFileObjectAvailable")
    dp_w, dp_r = DomainParticipant(domain), DomainParticipant(domain)
    w = DataWriter(dp_w, Topic(dp_w, st.dds_name, cls, qos=qos), qos=qos)
    r = DataReader(dp_r, Topic(dp_r, st.dds_name, cls, qos=qos), qos=qos)
    ws = WaitSet(dp_r)
    ws.attach(ReadCondition(r, SampleState.NotRead | ViewState.Any | InstanceState.Any))
    deadline = time.monotonic() + 5
    while r.get_subscription_matched_status().current_count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    sample = sal.make_sample(csc, "largeFileObjectAvailable", 0, url="http://127.0.0.1:5559/LATISS/20261124/AT_O_20261124_000001.fits",
                             generator=csc, version=1.0, byteSize=60480, checkSum="0" * 32, mimeType="application/fits",
                             id="AT_O_20261124_000001")  # fmt: skip
    times = []
    for i in range(count):
        sample.private_seqNum = i
        t0 = time.perf_counter()
        w.write(sample)
        got = []
        while not got:
            ws.wait(duration(seconds=1))
            got = [s for s in r.take(N=16) if getattr(getattr(s, "sample_info", None), "valid_data", True)]
            if time.perf_counter() - t0 > 2:
                break
        if got:
            times.append((time.perf_counter() - t0) * 1000.0)
        time.sleep(0.002)
    return {**ms_summary(times), "note": "two participants of one process (Cyclone may deliver locally)"}
