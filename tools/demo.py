"""hs-demo: run one Header Service instance with its simulator and show every header it announces.

Starts the instance under supervisord (temporary run folder and annex unless --annex), plays a
night with hs-sim (a built-in default night unless --scenario), waits until every exposure's header
is announced on DDS, downloads each from its URL, checks the announced MD5 and fitsverify, prints a
summary and stops everything cleanly, also when it is interrupted (SIGTERM, SIGINT: exit status
143, 130). Exit status 0 only if every header arrived and verified.

``--annex s3`` puts the annex on S3: a moto S3 server is started on loopback (``S3_ENDPOINT_URL``
and test credentials are given to the instance), the headers go to bucket ``rubinobs-lfa-<site>``
under the LFA keys, and each is downloaded from S3 and checked. ``--format fits|yaml|both`` chooses
the header files written (YAML is checked by reading it back).

``--bus kafka`` runs the instance, the simulator and the watcher on SAL over Kafka; without
``LSST_KAFKA_BROKER_ADDR`` in the environment the embedded bus (Tansu and hs-registry on loopback,
:mod:`tools.kafka_local`) is started for the demo and its variables are given to every process.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from protocols.config import load_instance
from tools.lfo import BusWatcher, KafkaBusWatcher
from tools.runner import Deployment, exit_on_signals, venv_bin


def fitsverify(path: Path) -> tuple[int, int, str]:
    """(errors, warnings, output) of fitsverify on a file; (-1, -1, reason) when not installed."""
    exe = shutil.which("fitsverify")
    if not exe:
        return -1, -1, "fitsverify not installed"
    out = subprocess.run([exe, "-q", str(path)], capture_output=True, text=True).stdout
    full = subprocess.run([exe, str(path)], capture_output=True, text=True).stdout
    import re

    m = re.search(r"(\d+) warning\(s\) and (\d+) error\(s\)", full)
    if not m:
        return -1, -1, out + full
    return int(m.group(2)), int(m.group(1)), full


def download(url: str, bucket: str | None) -> bytes:
    """An announced header's bytes: over HTTP from the annex folder's server, or from S3 (the URL is
    ``<S3_ENDPOINT_URL>/<bucket>/<key>``; the bucket is not public, so with the S3 credentials)."""
    if bucket is None:
        return urllib.request.urlopen(url, timeout=10).read()  # noqa: S310 (loopback)
    from procs.annex_s3 import s3_client

    key = url.split(f"/{bucket}/", 1)[1]
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def check_file(path: Path, mime: str) -> tuple[int, str]:
    """(errors, verdict): fitsverify for FITS; for YAML, that it reads back as a header."""
    if mime == "YAML":
        from header.yamlheader import YamlHeaderError, decode_yaml

        try:
            return 0, f"{len(decode_yaml(path.read_bytes()))} HDUs"
        except YamlHeaderError as exc:
            return 1, f"bad YAML: {exc}"[:40]
    errors, warnings, _ = fitsverify(path)
    return errors, "clean" if errors == 0 and warnings == 0 else f"{errors}E/{warnings}W"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hs-demo", description=__doc__)
    p.add_argument("--instrument", default="LATISS", choices=["LATISS", "ComCam", "LSSTCam"])
    p.add_argument("--scenario", type=Path, help="scenario YAML for hs-sim (default: a built-in night)")
    p.add_argument("--exposures", type=int, default=4, help="exposures of the built-in night (default 4)")
    p.add_argument("--speed", type=float, default=10.0, help="simulated clock speed (default 10x; 0 = as fast as possible)")
    p.add_argument("--annex", help="annex folder to keep the headers in (default: a temporary folder), or s3 for an S3 annex on loopback")
    p.add_argument("--format", choices=("fits", "yaml", "both"), default="fits", help="header files written (default fits)")
    p.add_argument("--bus", choices=("dds", "kafka"), default=os.environ.get("HS_BUS") or "dds", help="SAL transport (default dds)")
    p.add_argument("--domain", type=int, default=int(os.environ.get("HS_DDS_DOMAIN", "0")), help="DDS domain id")
    p.add_argument("--port-offset", type=int, default=int(os.environ.get("HS_PORT_OFFSET", "0")))
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the last header after the night")
    p.add_argument("--keep", action="store_true", help="leave the run folder (logs) in place")
    args = p.parse_args(argv)
    exit_on_signals()  # SIGTERM/SIGINT run the clean-up below: no supervisord or instance left behind

    tmp = Path(tempfile.mkdtemp(prefix="hs-demo-"))
    on_s3 = args.annex == "s3"
    annex = tmp / "annex" if on_s3 or not args.annex else Path(args.annex).resolve()
    s3 = None
    extra = {"HS_LFO_FORMAT": args.format}
    if on_s3:
        from tools.s3server import MotoServer

        s3 = MotoServer(log=tmp / "moto.log").start()
        extra.update(s3.env, HS_ANNEX="s3")
        os.environ.update(s3.env)  # this process downloads the headers from it
        print(f"hs-demo: S3 server (moto) on {s3.url}")
    kafka = None
    if args.bus == "kafka" and not os.environ.get("LSST_KAFKA_BROKER_ADDR"):
        from tools import kafka_local

        kafka = kafka_local.start(tmp / "kafka")
        extra.update(kafka.env(os.environ.get("LSST_TOPIC_SUBNAME") or "sal"))
        print(f"hs-demo: embedded Kafka bus: broker {kafka.broker_addr}, registry {kafka.registry_url}")
    dep = Deployment(tmp / "run", annex, args.domain, args.port_offset, extra_env=extra, bus=args.bus)
    dep.apply_env()
    os.environ["HS_LFO_FORMAT"] = args.format
    cfg = load_instance(args.instrument)
    sim_args = ["--scenario", str(args.scenario)] if args.scenario else ["--default", args.instrument, "--exposures", str(args.exposures)]
    listed = subprocess.run([venv_bin("hs-sim"), *sim_args, "--list-images"], capture_output=True, text=True, env=dep.env)
    if listed.returncode != 0:
        print(listed.stderr.strip() or listed.stdout.strip(), file=sys.stderr)
        return 2
    images = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    where = f"s3://{cfg.annex_bucket}" if cfg.annex_bucket else str(annex)
    print(f"hs-demo: {args.instrument}, {len(images)} exposures, annex {where}, logs {dep.run_dir}")
    ok = False
    watcher = None
    sim: subprocess.Popen | None = None
    try:
        dep.start()
        dep.start_instance(args.instrument)
        dep.wait_running(args.instrument)
        watched = [(cfg.csc, "largeFileObjectAvailable"), (cfg.camera, "endOfImageTelemetry")]
        watcher = KafkaBusWatcher(watched, dep.env) if args.bus == "kafka" else BusWatcher(args.domain, watched)
        time.sleep(1.0)  # let DDS discovery settle before the night starts
        sim = subprocess.Popen([venv_bin("hs-sim"), *sim_args, "--speed", str(args.speed), "--domain", str(args.domain)], env=dep.env)
        while sim.poll() is None:  # watch the bus while the night plays, so latencies are real
            watcher.poll()
            time.sleep(0.002)
        if sim.returncode != 0:
            print("hs-demo: hs-sim failed", file=sys.stderr)
            return 1
        key = (cfg.csc, "largeFileObjectAvailable")
        mimes = {"fits": ["FITS"], "yaml": ["YAML"], "both": ["FITS", "YAML"]}[args.format]
        wanted = {(i, m) for i in images for m in mimes}
        arrivals = watcher.wait_for(key, lambda a: {(x.sample.id, x.sample.mimeType) for x in a} >= wanted, args.timeout)
        ends = {x.sample.imageName: x.wall for x in watcher.arrivals[(cfg.camera, "endOfImageTelemetry")]}
        announced = {}
        for a in arrivals:
            announced[(a.sample.id, a.sample.mimeType)] = a
        print(f"{'imageName':<24} {'ver':>3} {'bytes':>9} {'latency':>9}  md5  check       path / url")
        ok = True
        for image, mime in sorted(wanted):
            a = announced.get((image, mime))
            if a is None:
                print(f"{image:<24} {mime} NOT ANNOUNCED (see {dep.run_dir})")
                ok = False
                continue
            s = a.sample
            data = download(s.url, cfg.annex_bucket)
            md5_ok = hashlib.md5(data).hexdigest() == s.checkSum
            if cfg.annex_bucket is None:
                local = annex / s.url.split("/", 3)[3]
            else:  # checked on a local copy of the S3 object
                local = tmp / "downloads" / Path(s.url).name
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
            errors, verdict = check_file(local, mime)
            lat = f"{(a.wall - ends[image]) * 1000:7.1f}ms" if image in ends else "      n/a"
            print(f"{image:<24} {s.version:>3.0f} {s.byteSize:>9} {lat:>9}  {'ok' if md5_ok else 'BAD'}  {verdict:<10}  {local}")
            print(f"{'':<24} {s.url}")
            ok = ok and md5_ok and errors == 0
        print("hs-demo: every header announced, downloaded and verified" if ok else "hs-demo: FAILED")
    finally:
        if sim is not None and sim.poll() is None:
            sim.terminate()
            sim.wait(10)
        dep.stop()
        if s3 is not None:
            s3.stop()
        if kafka is not None:
            if isinstance(watcher, KafkaBusWatcher):
                watcher.close()
            kafka.stop()
        if not args.keep and ok:
            shutil.rmtree(dep.run_dir, ignore_errors=True)
        if (not args.annex or on_s3) and ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
