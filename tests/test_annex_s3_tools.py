"""hs-get and hs-mirror on the S3 annex, against moto's S3 server on loopback (real HTTP, boto3).

Objects are stored with the publisher's own backend (procs.annex_s3.S3Annex), then found by
imageName (latest version, either format, the MD5-named copy when the plain key held other bytes)
and mirrored bucket to bucket and bucket to folder, with MD5 checks, catch-up after an outage and
hostile keys refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import pytest

from procs.annex import conflict_location
from procs.annex_s3 import S3Annex, s3_client
from procs.common import Stop
from tools import get
from tools.mirror_s3 import BucketMirror, run
from tools.s3server import MotoServer

CSC = "ATHeaderService"
IMAGE = "AT_O_20261124_000007"


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    srv = MotoServer(log=tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield srv
    srv.stop()


@pytest.fixture
def summit(s3server: MotoServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> S3Annex:
    for k, v in s3server.env.items():
        monkeypatch.setenv(k, v)
    annex = S3Annex("rubinobs-lfa-" + hashlib.md5(request.node.name.encode()).hexdigest()[:12], CSC)
    annex.check()
    return annex


def store(annex: S3Annex, image: str, version: int, fmt: str, data: bytes) -> str:
    key = annex.location(image.split("_")[2], image, version, fmt)
    annex.put(key, data, hashlib.md5(data).hexdigest(), fmt)
    return key


def test_hs_get_finds_the_latest_version_in_either_format(summit: S3Annex, tmp_path: Path) -> None:
    store(summit, IMAGE, 1, "fits", b"v1 fits")
    store(summit, IMAGE, 1, "yaml", b"PRIMARY: []\n")
    store(summit, IMAGE, 2, "fits", b"v2 fits")
    out = tmp_path / "h.fits"
    assert get.main([IMAGE, "--s3", f"s3://{summit.bucket}", "-o", str(out)]) == 0
    assert out.read_bytes() == b"v2 fits"
    assert get.main([IMAGE, "--s3", f"s3://{summit.bucket}", "--format", "yaml", "-o", str(out)]) == 0
    assert out.read_bytes() == b"PRIMARY: []\n"
    assert get.main(["AT_O_20261124_000099", "--s3", f"s3://{summit.bucket}", "-o", str(out)]) == 1


def test_hs_get_prefers_the_copy_named_by_its_md5(summit: S3Annex, tmp_path: Path) -> None:
    key = store(summit, IMAGE, 1, "fits", b"someone else's bytes")
    ours = b"our header"
    alt = conflict_location(key, hashlib.md5(ours).hexdigest())
    summit.put(alt, ours, hashlib.md5(ours).hexdigest(), "fits")
    out = tmp_path / "h.fits"
    assert get.main([IMAGE, "--s3", f"s3://{summit.bucket}", "-o", str(out)]) == 0
    assert out.read_bytes() == ours


def test_mirror_bucket_to_bucket_and_folder_with_catch_up(summit: S3Annex, s3server: MotoServer, tmp_path: Path) -> None:
    keys = [store(summit, f"AT_O_20261124_00000{i}", 1, "fits", f"header {i}".encode()) for i in (1, 2)]
    base = S3Annex(summit.bucket + "-base", CSC)
    base.check()
    to_bucket = BucketMirror(CSC, summit.bucket, f"s3://{base.bucket}")
    to_folder = BucketMirror(CSC, summit.bucket, str(tmp_path / "base"))
    assert run(to_bucket, Stop(), once=True, resync=1) == 0
    assert run(to_folder, Stop(), once=True, resync=1) == 0
    # more headers while the link is down: the pass fails, nothing is lost, the next one catches up
    keys += [store(summit, f"AT_O_20261124_00000{i}", 1, "fits", f"header {i}".encode()) for i in (3, 4)]
    s3server.pause()
    try:
        assert to_bucket.sync(), "a pass during the outage reports its problem"
    finally:
        s3server.resume()
    assert to_bucket.sync() == [] and to_folder.sync() == []
    for i, key in enumerate(keys, 1):
        want = f"header {i}".encode()
        assert base.get(key) == want
        assert (tmp_path / "base" / key).read_bytes() == want
    assert to_bucket.counts["copied"] == 4 and to_folder.counts["copied"] == 4


def test_mirror_never_replaces_other_bytes_and_refuses_bad_keys(summit: S3Annex, tmp_path: Path) -> None:
    key = store(summit, IMAGE, 1, "fits", b"summit bytes")
    base = S3Annex(summit.bucket + "-base", CSC)
    base.check()
    s3_client().put_object(Bucket=base.bucket, Key=key, Body=b"base bytes")
    s3_client().put_object(Bucket=summit.bucket, Key=f"{CSC}/header/../../../../escape", Body=b"x")
    m = BucketMirror(CSC, summit.bucket, f"s3://{base.bucket}")
    problems = m.sync()
    assert any("other bytes" in p for p in problems), problems
    assert base.get(key) == b"base bytes"
    assert m.counts["bad_keys"] == 1
    folder = BucketMirror(CSC, summit.bucket, str(tmp_path / "base"))
    assert folder.sync() == []
    assert {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()} == {f"base/{key}"}
