"""The annex on S3 (issue 13), against a real S3 server on loopback (moto's server mode).

The publisher runs in this process on real sockets (ZeroMQ, DDS on loopback) and uploads over HTTP
with boto3 to ``moto_server`` on a free 127.0.0.1 port; what it stored is read back with a separate
boto3 client. Covered: key, URL and MD5 of every upload and announcement, FITS and YAML (both: two
objects, two announcements), a reissue under its own key, an object already there with other bytes
(never overwritten), S3 stopped mid-night (kept, announced when it answers again, operators warned),
a bad DAYOBS (rejected before any key is made), a missing bucket (created), wrong credentials (a
clear error and a FAULT for the CSC).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq

from header.yamlheader import cards_to_records, decode_yaml
from procs.annex_s3 import S3Annex, S3SetupError, header_key, s3_client
from protocols.config import load_instance
from protocols.csc_state import ErrorCode
from protocols.envelope import decode
from protocols.names import BadName
from tests.conftest import fresh_domain_and_offset
from tests.plain_dds import PlainReader
from tests.test_annex_safety import GOOD, RunningPublisher, header_payload
from tools.s3server import MotoServer

CSC = "ATHeaderService"
DAY_KEY = f"{CSC}/header/2026/11/25/{CSC}-header-"


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    srv = MotoServer(log=tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield srv
    srv.stop()


@pytest.fixture
def s3env(s3server: MotoServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """S3 settings of this test; its own bucket (not created: the publisher makes it)."""
    for k, v in s3server.env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    bucket = "rubinobs-lfa-t" + hashlib.md5(request.node.name.encode()).hexdigest()[:10]
    return bucket


def start_publisher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bucket: str, fmt: str = "fits") -> RunningPublisher:
    domain, offset = fresh_domain_and_offset()
    monkeypatch.setenv("HS_DDS_DOMAIN", str(domain))
    monkeypatch.setenv("HS_PORT_OFFSET", str(offset))
    monkeypatch.setenv("HS_ANNEX", f"s3://{bucket}")
    monkeypatch.setenv("HS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HS_LFO_FORMAT", fmt)
    rp = RunningPublisher(load_instance("LATISS"))
    rp.reader = PlainReader(domain, CSC, "logevent_largeFileObjectAvailable")
    return rp


@pytest.fixture
def s3pub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3env: str, request: pytest.FixtureRequest) -> Iterator[RunningPublisher]:
    rp = start_publisher(tmp_path, monkeypatch, s3env, getattr(request, "param", "fits"))
    rp.bucket = s3env
    yield rp
    rp.close()


def get_object(bucket: str, key: str) -> bytes:
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3_client().list_objects_v2(Bucket=bucket).get("Contents", []))


# -- pure ------------------------------------------------------------------------------------------


def test_lfa_key_layout() -> None:
    assert header_key(CSC, "20261124", "AT_O_20261124_000001", 1, "yaml") == \
        f"{CSC}/header/2026/11/24/{CSC}-header-AT_O_20261124_000001.yaml"  # fmt: skip
    assert header_key("MTHeaderService", 20261231, "MC_O_20261231_000042", 2, "fits") == \
        "MTHeaderService/header/2026/12/31/MTHeaderService-header-MC_O_20261231_000042.v2.fits"  # fmt: skip
    for dayobs, image in (("../../x", GOOD), ("20261125", "../../x"), ("2" * 300, GOOD), ("20261125", "a/b")):
        with pytest.raises(BadName):
            header_key(CSC, dayobs, image, 1, "fits")


def test_bucket_from_the_site(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_ANNEX", "s3")
    assert load_instance("LATISS").annex_bucket == "rubinobs-lfa-tuc"
    monkeypatch.setenv("HS_ANNEX", "s3://rubinobs-lfa-cp")
    cfg = load_instance("LATISS")
    assert cfg.annex_bucket == "rubinobs-lfa-cp" and cfg.lfo_formats == ("fits",)
    monkeypatch.setenv("HS_LFO_FORMAT", "both")
    assert load_instance("LATISS").lfo_formats == ("fits", "yaml")


# -- the publisher on S3 ------------------------------------------------------------------------------


@pytest.mark.parametrize("s3pub", ["both"], indirect=True)
def test_upload_and_announcement_in_both_formats(s3pub: RunningPublisher, s3server: MotoServer) -> None:
    payload = header_payload(s3pub.cfg)
    s3pub.send(payload)
    ack = s3pub.wait("ctl.announced.", lambda p: p["imageName"] == GOOD)
    got = s3pub.reader.wait(lambda s: len([x for x in s if x["id"] == GOOD]) >= 2, 10)
    by_mime = {x["mimeType"]: x for x in got if x["id"] == GOOD}
    assert sorted(by_mime) == ["FITS", "YAML"] and len(got) == 2
    for mime, suffix in (("FITS", ".fits"), ("YAML", ".yaml")):
        key = f"{DAY_KEY}{GOOD}{suffix}"
        ann = by_mime[mime]
        assert ann["url"] == f"{s3server.url}/{s3pub.bucket}/{key}"
        data = get_object(s3pub.bucket, key)
        assert hashlib.md5(data).hexdigest() == ann["checkSum"] and len(data) == ann["byteSize"]
        assert ann["version"] == 1.0 and ann["generator"] == CSC
    fits = get_object(s3pub.bucket, f"{DAY_KEY}{GOOD}.fits")
    assert fits.startswith(b"SIMPLE  =") and len(fits) % 2880 == 0
    hdus = decode_yaml(get_object(s3pub.bucket, f"{DAY_KEY}{GOOD}.yaml"))
    assert len(hdus) == len(payload["hdus"])
    assert hdus[0] == [c for c in cards_to_records(payload["hdus"][0]["cards"]) if c.keyword not in ("CHECKSUM", "DATASUM")]
    assert ack["files"]["yaml"]["url"] == by_mime["YAML"]["url"] and ack["annex"] == "s3"
    assert f"{DAY_KEY}{GOOD}.prov.json" in keys(s3pub.bucket)


def test_reissue_gets_its_own_key(s3pub: RunningPublisher) -> None:
    s3pub.send(header_payload(s3pub.cfg, version=1))
    s3pub.wait("ctl.announced.", lambda p: p["imageName"] == GOOD and p["version"] == 1)
    v1 = get_object(s3pub.bucket, f"{DAY_KEY}{GOOD}.fits")
    s3pub.send(header_payload(s3pub.cfg, version=2))
    ann = s3pub.wait("ctl.announced.", lambda p: p["imageName"] == GOOD and p["version"] == 2)
    assert ann["path"] == f"{DAY_KEY}{GOOD}.v2.fits"
    assert get_object(s3pub.bucket, f"{DAY_KEY}{GOOD}.fits") == v1
    assert hashlib.md5(get_object(s3pub.bucket, ann["path"])).hexdigest() == ann["md5"]


def test_object_with_other_bytes_is_never_overwritten(s3pub: RunningPublisher) -> None:
    key = f"{DAY_KEY}{GOOD}.fits"
    s3_client().put_object(Bucket=s3pub.bucket, Key=key, Body=b"someone else's file")
    s3pub.send(header_payload(s3pub.cfg))
    ann = s3pub.wait("ctl.announced.", lambda p: p["imageName"] == GOOD)
    assert get_object(s3pub.bucket, key) == b"someone else's file"
    assert ann["path"] == f"{DAY_KEY}{GOOD}.{ann['md5'][:8]}.fits"
    assert hashlib.md5(get_object(s3pub.bucket, ann["path"])).hexdigest() == ann["md5"]
    warn = s3pub.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.HEADER_SET_ASIDE)
    assert "other bytes" in warn["report"]
    got = s3pub.reader.wait(lambda s: any(x["id"] == GOOD for x in s), 10)
    assert [x["url"].endswith(ann["path"]) for x in got] == [True], got


def test_s3_outage_mid_night_loses_nothing(s3pub: RunningPublisher, s3server: MotoServer) -> None:
    first = "AT_O_20261125_000001"
    s3pub.send(header_payload(s3pub.cfg, image=first))
    s3pub.wait("ctl.announced.", lambda p: p["imageName"] == first)
    names = ["AT_O_20261125_000002", "AT_O_20261125_000003", "AT_O_20261125_000004"]
    s3server.pause()  # accepts connections, never answers: down or very slow
    try:
        for n in names:
            s3pub.send(header_payload(s3pub.cfg, image=n))
        warn = s3pub.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.ANNEX_UNWRITABLE and p["active"], timeout=60)
        assert f"s3://{s3pub.bucket}" in warn["report"] and "kept" in warn["report"]
        deadline = time.monotonic() + 60
        while len(s3pub.pub.pending) < len(names):
            assert time.monotonic() < deadline, s3pub.pub.pending
            time.sleep(0.1)
        assert not any(t == f"ctl.announced.{n}" for t, _ in s3pub.seen for n in names)
    finally:
        s3server.resume()
    for n in names:
        ann = s3pub.wait("ctl.announced.", lambda p, n=n: p["imageName"] == n, timeout=60)
        assert hashlib.md5(get_object(s3pub.bucket, ann["path"])).hexdigest() == ann["md5"]
    over = s3pub.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.ANNEX_UNWRITABLE and not p["active"], timeout=30)
    assert "writable again" in over["report"]
    got = s3pub.reader.wait(lambda s: {x["id"] for x in s} >= {first, *names}, 10)
    assert sorted(x["id"] for x in got) == [first, *names]  # each announced once
    assert s3pub.pub.pending == []


def test_bad_dayobs_is_rejected_before_any_key(s3pub: RunningPublisher) -> None:
    s3pub.send(header_payload(s3pub.cfg, dayobs="../../../other-bucket/x"))
    rej = s3pub.wait("ctl.rejected.", lambda p: p["imageName"] == GOOD)
    assert "DAYOBS" in rej["reason"]
    assert (Path(s3pub.cfg.annex_folder) / rej["path"]).is_file()  # set aside, not lost
    s3pub.send(header_payload(s3pub.cfg, image="AT_O_20261125_000009"))
    s3pub.wait("ctl.announced.", lambda p: p["imageName"] == "AT_O_20261125_000009")
    assert [k for k in keys(s3pub.bucket) if not k.endswith(".prov.json")] == [f"{DAY_KEY}AT_O_20261125_000009.fits"]


def test_missing_bucket_is_created(s3env: str) -> None:
    annex = S3Annex(s3env, CSC)
    annex.check()
    assert s3env in [b["Name"] for b in s3_client().list_buckets()["Buckets"]]


def test_wrong_credentials_are_a_clear_error_and_a_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # this moto server checks credentials
    srv = MotoServer(log=tmp_path / "moto.log")
    try:
        srv.start()
        for k, v in srv.env.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(S3SetupError, match="credentials refused"):
            S3Annex("rubinobs-lfa-cp", CSC).check()
        fault_sub = zmq.Context.instance().socket(zmq.SUB)
        fault_sub.setsockopt(zmq.SUBSCRIBE, b"ctl.fault.")
        rp = start_publisher(tmp_path, monkeypatch, "rubinobs-lfa-cp")
        try:
            fault_sub.connect(rp.cfg.endpoints.publisher_pub)
            assert rp.pub.setup_error and "credentials refused" in rp.pub.setup_error
            assert fault_sub.poll(15000), "no fault for the CSC"
            fault = decode(fault_sub.recv_multipart()).payload
            assert fault["code"] == ErrorCode.ANNEX_UNWRITABLE and "credentials refused" in fault["report"]
        finally:
            fault_sub.close(linger=0)
            rp.close()
    finally:
        srv.stop()


def test_s3_server_stopped_and_restarted_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 really stopped (connections refused), then back without the bucket: the kept headers are
    uploaded into a bucket made again, and announced."""
    srv = MotoServer(log=tmp_path / "moto.log").start()
    try:
        for k, v in srv.env.items():
            monkeypatch.setenv(k, v)
        rp = start_publisher(tmp_path, monkeypatch, "rubinobs-lfa-restart")
        try:
            srv.stop()
            names = ["AT_O_20261125_000011", "AT_O_20261125_000012"]
            for n in names:
                rp.send(header_payload(rp.cfg, image=n))
            warn = rp.wait("ctl.warning.", lambda p: p["code"] == ErrorCode.ANNEX_UNWRITABLE and p["active"], timeout=60)
            assert "unwritable" in warn["report"]
            deadline = time.monotonic() + 30
            while len(rp.pub.pending) < 2:
                assert time.monotonic() < deadline, rp.pub.pending
                time.sleep(0.1)
            srv = MotoServer(port=srv.port, log=tmp_path / "moto2.log").start()  # same endpoint, empty
            for n in names:
                ann = rp.wait("ctl.announced.", lambda p, n=n: p["imageName"] == n, timeout=60)
                assert hashlib.md5(get_object("rubinobs-lfa-restart", ann["path"])).hexdigest() == ann["md5"]
            got = rp.reader.wait(lambda s: {x["id"] for x in s} >= set(names), 10)
            assert sorted(x["id"] for x in got) == names
        finally:
            rp.close()
    finally:
        srv.stop()
