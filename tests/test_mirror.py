"""Summit → base copy (hs-mirror) and retrieval by imageName (hs-get).

Pure tests of the lookup logic; hs-mirror against a small fake summit annex served over HTTP
(MD5 mismatch, newer versions, unreachable summit); and end to end: a real LATISS instance under
supervisord plays a night while hs-mirror copies it, is stopped mid-night (the summit–base link
down), restarted after the night, and the base annex ends complete and byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tools import get as hg
from tools import mirror as hm

BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fake_fits(text: str = "TEST", status: str = "COMPLETE") -> bytes:
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        f"OBJECT  = '{text}'",
        f"HDRSTAT = '{status}'",
        "END",
    ]
    block = "".join(c.ljust(80) for c in cards)
    return block.ljust(2880).encode("ascii")


def entry(image: str, version: int, data: bytes, port: int | None = None, instrument: str = "LATISS") -> dict[str, Any]:
    rel = hg.standard_path(image, instrument)
    return {
        "imageName": image,
        "version": version,
        "path": rel,
        "url": f"http://127.0.0.1:{port or 1}/{rel}",
        "md5": md5(data),
        "byteSize": len(data),
        "complete": True,
        "announced": 1.0e9 + version,
    }


def index_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeSummit:
    """A summit annex folder served over HTTP by the publisher's own server."""

    def __init__(self, root: Path, serve: bool = True):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None
        (root / "LATISS").mkdir(parents=True, exist_ok=True)
        if serve:
            self.start()

    def start(self) -> None:
        from procs.publisher import serve_annex

        self.server = serve_annex(self.root, self.port)

    def publish(self, image: str, version: int, data: bytes, md5_override: str | None = None) -> dict[str, Any]:
        e = entry(image, version, data, self.port)
        if md5_override:
            e["md5"] = md5_override
        path = self.root / e["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.with_suffix(".prov.json").write_text(json.dumps({"version": version}))
        with open(self.root / "LATISS" / "index.jsonl", "a") as fh:
            fh.write(json.dumps(e) + "\n")
        return e

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def summit(tmp_path: Path) -> Iterator[FakeSummit]:
    s = FakeSummit(tmp_path / "summit")
    yield s
    s.close()


NOSTOP = SimpleNamespace(requested=False)


# --------------------------------------------------------------------------------------------
# pure: hs-get lookup logic
# --------------------------------------------------------------------------------------------
def test_instrument_of_prefix() -> None:
    assert hg.instrument_of("AT_O_20261124_000001") == "LATISS"
    assert hg.instrument_of("CC_O_20261124_000002") == "ComCam"
    assert hg.instrument_of("MC_C_20261124_000003") == "LSSTCam"
    with pytest.raises(hg.UsageError, match="give --instrument"):
        hg.instrument_of("XX_O_20261124_000001")


def test_standard_path_uses_third_field_as_dayobs() -> None:
    assert hg.dayobs_of("AT_O_20261124_000001") == "20261124"
    assert hg.standard_path("AT_O_20261124_000001") == "LATISS/20261124/AT_O_20261124_000001.fits"
    assert hg.standard_path("MC_O_20270101_000042") == "LSSTCam/20270101/MC_O_20270101_000042.fits"
    assert hg.standard_path("AT_O_20261124_000001", "ComCam") == "ComCam/20261124/AT_O_20261124_000001.fits"
    with pytest.raises(hg.UsageError):
        hg.standard_path("AT_O_000001")


def test_parse_index_skips_unreadable_lines() -> None:
    text = "\n".join([
        json.dumps({"imageName": "AT_O_20261124_000001", "version": 1, "md5": "a"}),
        "{not json",
        json.dumps({"no": "imageName"}),
        "",
        json.dumps({"imageName": "AT_O_20261124_000002", "version": 1, "md5": "b"}),
        '{"imageName": "AT_O_2026',  # a line being written
    ])
    assert [e["imageName"] for e in hg.parse_index(text)] == ["AT_O_20261124_000001", "AT_O_20261124_000002"]


def test_find_in_index_takes_latest_version() -> None:
    entries = [
        {"imageName": "AT_O_20261124_000001", "version": 1, "md5": "v1"},
        {"imageName": "AT_O_20261124_000002", "version": 1, "md5": "other"},
        {"imageName": "AT_O_20261124_000001", "version": 3, "md5": "v3"},
        {"imageName": "AT_O_20261124_000001", "version": 2.0, "md5": "v2"},
    ]
    assert hg.find_in_index(entries, "AT_O_20261124_000001")["md5"] == "v3"
    assert hg.find_in_index(entries, "AT_O_20261124_000002")["md5"] == "other"
    assert hg.find_in_index(entries, "AT_O_20261124_000099") is None
    assert hg.find_in_index([], "AT_O_20261124_000001") is None


def test_entry_path_from_path_url_or_standard() -> None:
    assert hg.entry_path({"imageName": "AT_O_20261124_000001", "path": "LATISS/20261124/a.fits"}) == "LATISS/20261124/a.fits"
    url = "http://127.0.0.1:5559/LATISS/20261124/AT_O_20261124_000001.fits"
    assert hg.entry_path({"imageName": "AT_O_20261124_000001", "url": url}) == "LATISS/20261124/AT_O_20261124_000001.fits"
    assert hg.entry_path({"imageName": "AT_O_20261124_000001"}) == "LATISS/20261124/AT_O_20261124_000001.fits"


def test_check_md5_and_primary_cards() -> None:
    data = fake_fits("X")
    e = {"imageName": "AT_O_20261124_000001", "md5": md5(data), "byteSize": len(data)}
    hg.check_md5(data, e, "here")
    with pytest.raises(hg.GetError, match="MD5 mismatch"):
        hg.check_md5(data[:-1] + b"!", e, "here")
    with pytest.raises(hg.GetError, match="size mismatch"):
        hg.check_md5(data + b" ", {**e, "md5": ""}, "here")
    cards = hg.primary_cards(data)
    assert cards[0].startswith("SIMPLE") and cards[-1] == "END" and "HDRSTAT = 'COMPLETE'" in cards
    with pytest.raises(hg.GetError):
        hg.primary_cards(b"x" * 160)


def test_fetch_from_folder_index_then_standard_path(tmp_path: Path) -> None:
    data = fake_fits("A")
    e = entry("AT_O_20261124_000001", 1, data)
    (tmp_path / e["path"]).parent.mkdir(parents=True)
    (tmp_path / e["path"]).write_bytes(data)
    (tmp_path / "LATISS" / "index.jsonl").write_text(json.dumps(e) + "\n")
    got, where, verified = hg.fetch_from_folder(tmp_path, "AT_O_20261124_000001", "LATISS")
    assert got == data and verified
    # not in the index, but at the standard path: found, unverified
    other = tmp_path / hg.standard_path("AT_O_20261124_000002")
    other.write_bytes(data)
    got, where, verified = hg.fetch_from_folder(tmp_path, "AT_O_20261124_000002", "LATISS")
    assert got == data and not verified and where == str(other)
    with pytest.raises(hg.GetError, match="AT_O_20261124_000099 is not in the annex index at"):
        hg.fetch_from_folder(tmp_path, "AT_O_20261124_000099", "LATISS")
    # corrupt file: MD5 rejected
    (tmp_path / e["path"]).write_bytes(fake_fits("B"))
    with pytest.raises(hg.GetError, match="MD5 mismatch"):
        hg.fetch_from_folder(tmp_path, "AT_O_20261124_000001", "LATISS")


def test_get_cli_bad_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as ex:
        hg.run(["AT_O_20261124_000001"])  # neither --annex nor --url
    assert ex.value.code == 2
    with pytest.raises(SystemExit) as ex:
        hg.run(["ZZ_O_20261124_000001", "--annex", str(tmp_path)])  # instrument unknown
    assert ex.value.code == 2
    with pytest.raises(SystemExit) as ex:
        hg.run(["AT_O_20261124_000001", "--annex", str(tmp_path), "--url", "http://127.0.0.1:1"])
    assert ex.value.code == 2


# --------------------------------------------------------------------------------------------
# pure: hs-mirror bookkeeping
# --------------------------------------------------------------------------------------------
def test_backoff_is_bounded() -> None:
    assert [hm.backoff(n, 60) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert hm.backoff(30, 60) == 60


def test_safe_relpath_refuses_escapes() -> None:
    assert hm.safe_relpath("/LATISS/20261124/a.fits", "LATISS") == "LATISS/20261124/a.fits"
    for bad in ("LATISS/../etc/passwd.fits", "ComCam/20261124/a.fits", "LATISS/20261124/a.txt", ""):
        with pytest.raises(ValueError):
            hm.safe_relpath(bad, "LATISS")


def test_offer_keeps_newest_version(tmp_path: Path) -> None:
    m = hm.Mirror("LATISS", tmp_path, "http://127.0.0.1:1")
    d1, d2 = fake_fits("v1"), fake_fits("v2")
    c1 = hm.candidate_from_entry(entry("AT_O_20261124_000001", 1, d1), "LATISS", m.summit_url)
    c2 = hm.candidate_from_entry(entry("AT_O_20261124_000001", 2, d2), "LATISS", m.summit_url)
    assert m.offer(c1)
    assert m.offer(c2)
    assert not m.offer(c1)  # an older version never replaces a newer one
    assert m.pending["AT_O_20261124_000001"].version == 2
    m.have["AT_O_20261124_000001"] = (2.0, md5(d2))
    assert not m.offer(c2) and not m.offer(c1)


# --------------------------------------------------------------------------------------------
# hs-mirror against a fake summit (HTTP, no DDS)
# --------------------------------------------------------------------------------------------
def test_mirror_once_copies_and_is_idempotent(summit: FakeSummit, tmp_path: Path) -> None:
    base = tmp_path / "base"
    for i in range(1, 4):
        summit.publish(f"AT_O_20261124_{i:06d}", 1, fake_fits(f"img{i}"))
    assert hm.run_once(hm.Mirror("LATISS", base, summit.url), NOSTOP, retries=2) == 0
    lines = index_lines(base / "LATISS" / "index.jsonl")
    assert len(lines) == 3 and all(e["complete"] is True for e in lines)
    for e in lines:
        assert (base / e["path"]).read_bytes() == (summit.root / e["path"]).read_bytes()
        assert (base / e["path"]).with_suffix(".prov.json").exists()
    # a restart reads its own index: nothing copied twice
    m = hm.Mirror("LATISS", base, summit.url)
    assert hm.run_once(m, NOSTOP, retries=2) == 0
    assert m.counts["copied"] == 0 and len(index_lines(base / "LATISS" / "index.jsonl")) == 3


def test_mirror_once_repairs_missing_or_corrupt_base_files(summit: FakeSummit, tmp_path: Path) -> None:
    base = tmp_path / "base"
    for i in range(1, 3):
        summit.publish(f"AT_O_20261124_{i:06d}", 1, fake_fits(f"img{i}"))
    assert hm.run_once(hm.Mirror("LATISS", base, summit.url), NOSTOP, retries=2) == 0
    p1, p2 = (base / hg.standard_path(f"AT_O_20261124_{i:06d}") for i in (1, 2))
    p1.unlink()  # lost
    p2.write_bytes(fake_fits("XXXX"))  # same size, other bytes
    m = hm.Mirror("LATISS", base, summit.url)
    assert "AT_O_20261124_000001" not in m.have  # seen at start (stat)
    assert hm.run_once(m, NOSTOP, retries=2) == 0  # the MD5 check of --once finds the other
    assert m.counts["copied"] == 2
    assert p1.read_bytes() == fake_fits("img1") and p2.read_bytes() == fake_fits("img2")


def test_mirror_newer_version_replaces_older(summit: FakeSummit, tmp_path: Path) -> None:
    base = tmp_path / "base"
    image = "AT_O_20261124_000001"
    summit.publish(image, 1, fake_fits("first", "INCOMPLETE"))
    assert hm.run_once(hm.Mirror("LATISS", base, summit.url), NOSTOP, retries=2) == 0
    v2 = fake_fits("second")
    summit.publish(image, 2, v2)
    assert hm.run_once(hm.Mirror("LATISS", base, summit.url), NOSTOP, retries=2) == 0
    lines = index_lines(base / "LATISS" / "index.jsonl")
    assert [(e["version"], e["complete"]) for e in lines] == [(1, True), (2, True)]
    assert (base / hg.standard_path(image)).read_bytes() == v2
    got, _, verified = hg.fetch_from_folder(base, image, "LATISS")
    assert got == v2 and verified


def test_mirror_rejects_md5_mismatch(summit: FakeSummit, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "base"
    summit.publish("AT_O_20261124_000001", 1, fake_fits("good"))
    summit.publish("AT_O_20261124_000002", 1, fake_fits("bad"), md5_override="0" * 32)
    m = hm.Mirror("LATISS", base, summit.url, max_backoff=1)
    with caplog.at_level(logging.INFO, logger="mirror"):
        t0 = time.monotonic()
        assert hm.run_once(m, NOSTOP, retries=2) == 1
        assert time.monotonic() - t0 >= 0.9  # retried after a backoff, not in a tight loop
    assert "MD5 mismatch" in caplog.text and "rejected" in caplog.text
    assert m.counts["md5_mismatch"] == 2
    assert not (base / hg.standard_path("AT_O_20261124_000002")).exists()
    assert [e["imageName"] for e in index_lines(base / "LATISS" / "index.jsonl")] == ["AT_O_20261124_000001"]


def test_mirror_once_summit_unreachable_exits_1(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BIN / "hs-mirror"), "--instance", "LATISS", "--to", str(tmp_path / "base"), "--once",
         "--summit-url", f"http://127.0.0.1:{free_port()}", "--retries", "1", "--timeout", "2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "summit index" in out.stderr and "unreachable" in out.stderr


def test_mirror_follow_catches_up_when_summit_http_returns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Summit HTTP unreachable while hs-mirror runs: it backs off, then copies what was published."""
    import threading

    summit = FakeSummit(tmp_path / "summit", serve=False)
    base = tmp_path / "base"
    for i in range(1, 3):
        summit.publish(f"AT_O_20261124_{i:06d}", 1, fake_fits(f"img{i}"))
    m = hm.Mirror("LATISS", base, summit.url)
    stop = SimpleNamespace(requested=False)
    with caplog.at_level(logging.INFO, logger="mirror"):
        t = threading.Thread(target=hm.run_follow, args=(m, stop, "ATHeaderService", None, 30.0), daemon=True)
        t.start()
        try:
            time.sleep(1.5)
            assert m.counts["copied"] == 0 and m.counts["index_reads"] == 0
            summit.start()  # the link is back
            wait_until(lambda: m.counts["copied"] == 2, 10, "the catch-up")
        finally:
            stop.requested = True
            t.join(5)
            summit.close()
    assert not t.is_alive()
    assert "summit index reachable again" in caplog.text
    assert 1 <= caplog.text.count("failed read") <= 3  # backed off: 1 s, 2 s, ...
    assert len(index_lines(base / "LATISS" / "index.jsonl")) == 2


# --------------------------------------------------------------------------------------------
# end to end: a LATISS night, the link down mid-night, catch-up after it
# --------------------------------------------------------------------------------------------
N_EXPOSURES = 6
SPACING = 60.0  # simulated s between exposures: 3 s apart at speed 20


def night_scenario() -> dict[str, Any]:
    filters = ["SDSSr_65mm", "SDSSg_65mm", "SDSSi_65mm"]
    exps: list[dict[str, Any]] = []
    for i in range(N_EXPOSURES):
        mm, ss = divmod(4 * 60 + 6 + SPACING * i, 60)
        e: dict[str, Any] = {"start": f"2026-11-25T03:{int(mm):02d}:{ss:06.3f}", "exptime": 5.0,
                             "filter": filters[i % 3], "imgtype": "OBJECT"}
        if i == 0:
            e.update(ra=40.1167, dec=-40.0301, rotpa=183.74)
        exps.append(e)
    return {"instrument": "LATISS", "background": {"mount_hz": 10, "env_hz": 1}, "exposures": exps}


def wait_until(pred, timeout: float, what: str, step: float = 0.1) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def start_mirror(dep, base: Path, summit_url: str, log_path: Path) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen(
        [str(BIN / "hs-mirror"), "--instance", "LATISS", "--to", str(base), "--summit-url", summit_url,
         "--domain", str(dep.domain), "--resync", "5"],
        env=dep.env, stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"),  # noqa: SIM115
    )  # fmt: skip


def stop_process(p: subprocess.Popen, timeout: float = 15.0) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        raise


def hs_get(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hs-get"), *args], capture_output=True, text=True, timeout=30, cwd=cwd)


def test_base_catches_up_after_link_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from protocols.config import load_instance
    from tests.conftest import fresh_domain_and_offset, see_deployment
    from tools.runner import Deployment
    from tools.sim.scenario import load_scenario

    scen_path = tmp_path / "night.yaml"
    scen_path.write_text(yaml.safe_dump(night_scenario()))
    images = [img.name for img in load_scenario(scen_path).image_ids()]
    assert len(images) == N_EXPOSURES
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(tmp_path / "run", tmp_path / "summit", domain, offset)
    base = tmp_path / "base"
    summit_index = dep.annex / "LATISS" / "index.jsonl"
    base_index = base / "LATISS" / "index.jsonl"
    mirror_log = tmp_path / "mirror.log"
    procs: list[subprocess.Popen] = []
    dep.start()
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS")
        see_deployment(monkeypatch, dep)
        summit_url = f"http://127.0.0.1:{load_instance('LATISS').endpoints.http_port}"

        mirror = start_mirror(dep, base, summit_url, mirror_log)
        procs.append(mirror)
        sim = subprocess.Popen(
            [str(BIN / "hs-sim"), "--scenario", str(scen_path), "--speed", "20", "--domain", str(domain), "-q"],
            env=dep.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(sim)

        # the first couple of headers reach the base...
        wait_until(lambda: len(index_lines(base_index)) >= 2, 40, "2 headers copied to the base")
        # ...then the summit–base link goes down, mid-night
        assert stop_process(mirror) == 0, mirror_log.read_text()
        at_outage = {e["imageName"] for e in index_lines(base_index)}
        assert sim.poll() is None, "the night ended before the outage"
        assert len(index_lines(summit_index)) < N_EXPOSURES

        _, err = sim.communicate(timeout=60)
        assert sim.returncode == 0, err
        wait_until(lambda: {e["imageName"] for e in index_lines(summit_index)} >= set(images), 30,
                   "every header published at the summit")
        missed = set(images) - {e["imageName"] for e in index_lines(base_index)}
        assert missed, "the outage should have left headers to catch up"

        # link back: hs-mirror restarted after the night catches up
        mirror = start_mirror(dep, base, summit_url, mirror_log)
        procs.append(mirror)
        wait_until(lambda: {e["imageName"] for e in index_lines(base_index)} >= set(images), 30,
                   "the base to catch up")
        time.sleep(0.5)  # a duplicate would show up now
        assert stop_process(mirror) == 0
        log_text = mirror_log.read_text()
        assert "stopping: copied" in log_text and "pending 0" in log_text

        # the base annex is complete and byte-identical, one entry per (imageName, version)
        summit_latest = hg.latest_entries(index_lines(summit_index))
        base_lines = index_lines(base_index)
        keys = [(e["imageName"], e["version"]) for e in base_lines]
        assert len(keys) == len(set(keys)), f"duplicate entries in the base index: {keys}"
        base_latest = hg.latest_entries(base_lines)
        assert set(base_latest) == set(summit_latest) == set(images)
        assert at_outage < set(base_latest)
        for image, se in summit_latest.items():
            be = base_latest[image]
            assert be["path"] == se["path"] and be["version"] == se["version"] and be["md5"] == se["md5"]
            data = (base / be["path"]).read_bytes()
            assert data == (dep.annex / se["path"]).read_bytes()
            assert md5(data) == se["md5"]
            assert (base / be["path"]).with_suffix(".prov.json").read_bytes() == \
                (dep.annex / se["path"]).with_suffix(".prov.json").read_bytes()

        # operators' check: --once finds nothing to do and says so with exit 0
        once = subprocess.run(
            [str(BIN / "hs-mirror"), "--instance", "LATISS", "--to", str(base), "--summit-url", summit_url, "--once"],
            env=dep.env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert once.returncode == 0, once.stderr
        assert "complete and verified" in once.stderr
        assert index_lines(base_index) == base_lines

        # hs-get by imageName: from the base folder, the base over HTTP, the summit over HTTP
        port = free_port()
        http = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(http)
        base_url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                urllib.request.urlopen(f"{base_url}/LATISS/index.jsonl", timeout=1).read()
                return True
            except OSError:
                return False

        wait_until(up, 15, "the base HTTP server")
        image = images[-1]  # one copied after the outage
        want = summit_latest[image]["md5"]
        out_dir = tmp_path / "got"
        out_dir.mkdir()
        r = hs_get(image, "--annex", str(base), cwd=out_dir)
        assert r.returncode == 0, r.stderr
        assert md5((out_dir / f"{image}.fits").read_bytes()) == want
        for name, url in (("base", base_url), ("summit", summit_url)):
            r = hs_get(image, "--url", url, "-o", str(out_dir / f"{name}.fits"), cwd=out_dir)
            assert r.returncode == 0, r.stderr
            assert md5((out_dir / f"{name}.fits").read_bytes()) == want
        r = hs_get(images[0], "--annex", str(base), "--print", cwd=out_dir)
        assert r.returncode == 0, r.stderr
        assert f"OBSID   = '{images[0]}'" in r.stdout and r.stdout.rstrip().endswith("END")

        unknown = "AT_O_20261124_000099"
        for where in (("--annex", str(base)), ("--url", base_url)):
            r = hs_get(unknown, *where, cwd=out_dir)
            assert r.returncode == 1
            assert f"{unknown} is not in the annex index at" in r.stderr
        assert not (out_dir / f"{unknown}.fits").exists()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        dep.stop()
        if os.environ.get("HS_KEEP_LOGS"):
            print(mirror_log.read_text() if mirror_log.exists() else "")
