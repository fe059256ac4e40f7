"""hs-catchup on Kafka: a cache that lost its history (disk wiped) gets an exposure's window again
from the log (hs-catchup refill), and the header regenerated from it has the same values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import fitsio
import pytest
import yaml
from astropy.time import Time

from protocols.config import load_instance, load_keyword_map
from tests.conftest import see_deployment
from tests.kafka_harness import PlainKafkaReader
from tests.test_faults import night_yaml
from tests.test_kafka_pipeline import hs_sim, images_of
from tools.runner import Deployment, venv_bin


def catchup(dep: Deployment, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin("hs-catchup"), "--instance", "LATISS", *args], env=dep.env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_refill_from_kafka_after_the_cache_lost_its_history(
    deployment_factory: Callable[..., Deployment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment_factory(("LATISS",), bus="kafka")
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(night_yaml(2, cadence=8.0, exptime=1.0)))
    images = images_of(path)
    reader = PlainKafkaReader(dep.env, "ATHeaderService", "logevent_largeFileObjectAvailable")
    out, _ = hs_sim(dep, path, speed=10.0).communicate(timeout=120)
    first = reader.wait(lambda g: {a["id"] for a in g} >= set(images), timeout=60)
    assert {a["id"] for a in first} >= set(images), out

    see_deployment(monkeypatch, dep)
    cfg = load_instance("LATISS")
    kmap = load_keyword_map(cfg)
    before = {}
    for a in first:
        h = fitsio.read_header(str(dep.annex / a["url"].split("/", 3)[3]))
        before[a["id"]] = {src.keyword: h[src.keyword] for src in kmap.keywords if src.keyword in h}
    dep.supervisorctl("stop", "latiss:latiss-cache")
    shutil.rmtree(Path(cfg.state_dir) / "LATISS" / "cache")
    dep.supervisorctl("start", "latiss:latiss-cache")
    since = Time(1795402000.0 - 5, format="unix_tai", scale="tai").isot
    until = Time(1795402000.0 + 30, format="unix_tai", scale="tai").isot
    listed = catchup(dep, "--since", since, "--until", until, "list")
    assert not any(i in listed.stdout for i in images), listed.stdout  # the cache has nothing of that night

    got = catchup(dep, "--since", since, "--until", until, "refill")
    assert got.returncode == 0, got.stdout + got.stderr
    assert int(got.stdout.split()[0]) > 100, got.stdout
    listed = catchup(dep, "--since", since, "--until", until, "list")
    assert all(f"{i}" in listed.stdout for i in images), listed.stdout + listed.stderr
    regen = catchup(dep, "regenerate", *images)
    assert regen.returncode == 0, regen.stdout + regen.stderr
    again = reader.wait(lambda g: sum(a["version"] == 2 for a in g) >= len(images), timeout=60)
    reader.close()
    for image in images:
        v2 = next(a for a in again if a["id"] == image and a["version"] == 2)
        h2 = fitsio.read_header(str(dep.annex / v2["url"].split("/", 3)[3]))
        assert h2["HDRSTAT"].strip() == "COMPLETE", h2.get("HDRNOTE")
        assert len(before[image]) >= 60  # the primary HDU's keywords from the bus
        for keyword, value in before[image].items():
            assert h2.get(keyword) == value, (image, keyword, h2.get(keyword), value)
