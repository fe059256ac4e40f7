"""End to end on the S3 annex: a LATISS instance under supervisord writes FITS and YAML headers to a
moto S3 server on loopback, loses nothing while S3 is stopped mid-night, and the tools (hs-get,
hs-catchup) work on the same bucket.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import pytest
import yaml

from header.yamlheader import decode_yaml
from procs.annex_s3 import s3_client
from protocols.config import InstanceConfig, load_instance
from protocols.csc_state import CscStateFollower
from tests.conftest import run_sim, see_deployment
from tests.plain_dds import PlainReader
from tools.runner import Deployment, venv_bin
from tools.s3server import MotoServer

CSC = "ATHeaderService"
BUCKET = "rubinobs-lfa-tuc"


def night(start: str, image: str) -> dict[str, Any]:
    return {"instrument": "LATISS", "exposures": [
        {"start": start, "exptime": 2.0, "ra": 40.0, "dec": -40.0, "rotpa": 0.0, "filter": "SDSSr_65mm", "image_name": image}]}  # fmt: skip


FIRST, DURING = "AT_O_20261124_000001", "AT_O_20261124_000002"


@dataclass
class S3Night:
    """LATISS writing to a moto S3 bucket, after its first exposure (FIRST) was played."""

    dep: Deployment
    cfg: InstanceConfig
    srv: MotoServer
    reader: PlainReader
    base: Path


@pytest.fixture(scope="module")
def s3night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Night]:
    from tests.conftest import fresh_domain_and_offset

    base = tmp_path_factory.mktemp("s3night")
    srv = MotoServer(log=base / "moto.log").start()
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(base / "run", base / "annex", domain, offset, extra_env={**srv.env, "HS_ANNEX": "s3", "HS_LFO_FORMAT": "both"})
    mp = pytest.MonkeyPatch()
    for k, v in {**srv.env, "HS_LFO_FORMAT": "both"}.items():
        mp.setenv(k, v)
    dep.start()
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS")
        see_deployment(mp, dep)
        cfg = load_instance("LATISS")
        reader = PlainReader(domain, CSC, "logevent_largeFileObjectAvailable")
        time.sleep(1.0)
        ready = S3Night(dep, cfg, srv, reader, base)
        play(ready, night("2026-11-25T03:04:06.457", FIRST), "first")
        announcements(ready, FIRST, 2, 60)
        yield ready
    finally:
        dep.stop()
        srv.stop()
        mp.undo()


def play(s3night: S3Night, scenario: dict[str, Any], name: str) -> None:
    path = s3night.base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scenario))
    sim = run_sim(s3night.dep, path, speed=20)
    assert sim.returncode == 0, sim.stderr


def announcements(s3night: S3Night, image: str, n: int, timeout: float, version: float = 1.0) -> dict[str, dict[str, Any]]:
    """The announcements of one version of an image, by mimeType, once there are ``n``."""
    mine = lambda s: [x for x in s if x["id"] == image and x["version"] == version]  # noqa: E731
    return {x["mimeType"]: x for x in mine(s3night.reader.wait(lambda s: len(mine(s)) >= n, timeout))}


def test_headers_go_to_s3_in_both_formats(s3night: S3Night) -> None:
    anns = announcements(s3night, FIRST, 2, 60)
    assert sorted(anns) == ["FITS", "YAML"]
    prefix = f"{s3night.srv.url}/{BUCKET}/{CSC}/header/2026/11/24/{CSC}-header-{FIRST}"
    assert anns["FITS"]["url"] == prefix + ".fits" and anns["YAML"]["url"] == prefix + ".yaml"
    client = s3_client()
    fits = client.get_object(Bucket=BUCKET, Key=anns["FITS"]["url"].split(f"/{BUCKET}/", 1)[1])["Body"].read()
    yml = client.get_object(Bucket=BUCKET, Key=anns["YAML"]["url"].split(f"/{BUCKET}/", 1)[1])["Body"].read()
    assert hashlib.md5(fits).hexdigest() == anns["FITS"]["checkSum"]
    assert hashlib.md5(yml).hexdigest() == anns["YAML"]["checkSum"]
    hdus = decode_yaml(yml)
    primary = {c.keyword: c.value for c in hdus[0]}
    assert primary["OBSID"] == FIRST and primary["HDRSTAT"] == "COMPLETE" and len(hdus) == 18


def test_s3_stopped_mid_night_loses_nothing(s3night: S3Night, tmp_path: Path) -> None:
    follower = CscStateFollower(s3night.cfg, role="tester")
    s3night.srv.pause()
    try:
        play(s3night, night("2026-11-25T03:05:06.457", DURING), "during")
        log = lambda: s3night.dep.log("latiss-publisher")  # noqa: E731
        deadline = time.monotonic() + 60
        while f"cannot write {DURING}" not in log():
            assert time.monotonic() < deadline, log()[-2000:]
            time.sleep(0.2)
        assert follower.refresh(2.0) and follower.state == "ENABLED"  # warned, not FAULT
        assert "ANNEX_UNWRITABLE" in s3night.dep.log("latiss-csc")
    finally:
        s3night.srv.resume()
        follower.close()
    anns = announcements(s3night, DURING, 2, 60)
    assert sorted(anns) == ["FITS", "YAML"]
    # hs-get finds it on S3 by imageName
    out = tmp_path / "h.fits"
    got = subprocess.run([venv_bin("hs-get"), DURING, "--s3", f"s3://{BUCKET}", "-o", str(out)],
                         env=s3night.dep.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert hashlib.md5(out.read_bytes()).hexdigest() == anns["FITS"]["checkSum"]
    assert fitsio.read_header(str(out))["OBSID"] == DURING


def test_catchup_lists_and_reissues_on_s3(s3night: S3Night) -> None:
    env = s3night.dep.env
    listed = subprocess.run([venv_bin("hs-catchup"), "--instance", "LATISS", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"{FIRST}" in listed.stdout and "announced v1" in listed.stdout
    regen = subprocess.run([venv_bin("hs-catchup"), "--instance", "LATISS", "regenerate", FIRST, "--timeout", "60"],
                           env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert regen.returncode == 0, regen.stdout + regen.stderr
    anns = s3night.reader.wait(lambda s: len([x for x in s if x["id"] == FIRST and x["version"] == 2.0]) >= 2, 30)
    v2 = sorted(x["url"] for x in anns if x["id"] == FIRST and x["version"] == 2.0)
    assert [u.rsplit("-header-", 1)[1] for u in v2] == [f"{FIRST}.v2.fits", f"{FIRST}.v2.yaml"]


def test_wrong_credentials_keep_the_csc_out_of_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import fresh_domain_and_offset
    from tools.runner import Deployment

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # this S3 server checks credentials: ours are unknown
    srv = MotoServer(log=tmp_path / "moto.log").start()
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(tmp_path / "run", tmp_path / "annex", domain, offset, extra_env={**srv.env, "HS_ANNEX": "s3"})
    dep.start()
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS", enable=False)
        try:
            dep.enable("LATISS")  # start + enable, as an operator would: FAULT comes before or after enable
        except RuntimeError as exc:
            assert "enable not allowed in state FAULT" in str(exc), exc
        see_deployment(monkeypatch, dep)
        follower = CscStateFollower(load_instance("LATISS"), role="tester")
        try:
            deadline = time.monotonic() + 30
            while not (follower.refresh(1.0) and follower.state == "FAULT"):
                assert time.monotonic() < deadline, f"CSC {follower.state}\n{dep.log('latiss-csc')[-2000:]}"
                time.sleep(0.5)
        finally:
            follower.close()
        assert f"S3 credentials refused for bucket {BUCKET}" in dep.log("latiss-publisher")
        assert "annex unusable: S3 credentials refused" in dep.log("latiss-csc")
    finally:
        dep.stop()
        srv.stop()
