"""Annex faults on a live LATISS deployment: a disk that is full (the publisher's temporary file is a
symlink to /dev/full: ENOSPC even for root), then a DAYOBS folder that cannot be created (a regular
file in its place). The CSC stays ENABLED and warns, and the headers of exposures taken meanwhile are
kept and written, once each, when the annex is usable again.

The outage is played once per module (fixture ``outage``, on a deployment of its own); each test
checks one outcome of it, so either can run alone.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from protocols.envelope import decode
from tests.live_latiss import (
    LiveLatiss,
    announced,
    annex_path,
    composer_status,
    live_latiss,
    primary,
    prov,
    readable_json,
    wait_for,
)

FAULT_NIGHTS = [
    {"instrument": "LATISS", "exposures": [{"start": "2026-11-26T11:59:40.000", "exptime": 2.0, "ra": 40.0,
                                            "dec": -40.0, "rotpa": 0.0, "filter": "SDSSr_65mm"}]},  # DAYOBS 20261125
    {"instrument": "LATISS", "exposures": [{"start": "2026-11-26T12:00:30.000", "exptime": 2.0, "ra": 40.0,
                                            "dec": -40.0, "rotpa": 0.0, "filter": "SDSSr_65mm"}]},  # DAYOBS 20261126
]
PENDING_IMAGE = "AT_O_20261125_000001"
SKIPPED_IMAGE = "AT_O_20261126_000001"


@dataclass
class Outage:
    """The deployment after the outage, and the publisher's pid from before it."""

    live: LiveLatiss
    publisher_pid: int


def _nights() -> list[Any]:
    from tools.sim.night import Night
    from tools.sim.scenario import scenario_from_dict

    return [Night(scenario_from_dict(s, "annex faults")) for s in FAULT_NIGHTS]


def _play_outage(live: LiveLatiss) -> int:
    """Play the two exposures through a full disk and an unmakeable folder, then mend the annex.
    Asserts each step as it goes (the CSC stays ENABLED, headers are kept, nothing is skipped);
    returns the publisher's pid."""
    import zmq

    from protocols.csc_state import CscStateFollower

    dep, annex = live.dep, live.annex / "LATISS"
    day, day2 = annex / "20261125", annex / "20261126"
    log = lambda: dep.log("latiss-publisher")  # noqa: E731
    nights = _nights()
    live.player.prepare_topics(set().union(*(n.topics() for n in nights)))
    live.player.wait_for_readers(5.0)
    pub_pid = dep.pid("latiss:latiss-publisher")
    # 1. disk full: the publisher's temporary files are /dev/full (ENOSPC on write, also for root)
    for folder, image in ((day, PENDING_IMAGE), (day2, SKIPPED_IMAGE)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{image}.fits.{pub_pid}.tmp").symlink_to("/dev/full")
    warnings = zmq.Context.instance().socket(zmq.SUB)
    warnings.setsockopt(zmq.SUBSCRIBE, b"ctl.warning.")
    warnings.setsockopt(zmq.SUBSCRIBE, b"ctl.skipped.")
    warnings.connect(live.cfg.endpoints.publisher_pub)
    warnings.connect(live.cfg.endpoints.composer_pub)
    follower = CscStateFollower(live.cfg, role="tester")
    seen: list[tuple[str, dict[str, Any]]] = []

    def drain_warnings() -> list[tuple[str, dict[str, Any]]]:
        while warnings.poll(0):
            msg = decode(warnings.recv_multipart())
            seen.append((msg.topic, msg.payload))
        return seen

    try:
        time.sleep(0.3)
        live.player.play(list(nights[0].emissions()), 20.0, camera="ATCamera")
        assert wait_for(lambda: f"cannot write {PENDING_IMAGE} (kept, retried every 5 s): [Errno 28] No space left on device"
                        in log(), 15.0), log()[-2000:]
        failed_at = time.monotonic()
        assert composer_status(live)["done"].get(PENDING_IMAGE) == [1, True]
        assert PENDING_IMAGE not in announced(live)
        # operators are warned; the CSC stays ENABLED, and an exposure taken meanwhile is composed and kept
        assert wait_for(lambda: any(t.startswith("ctl.warning.") and p["code"] == 1 and p["active"]
                                    for t, p in drain_warnings()), 15.0), seen
        assert follower.refresh(2.0) and follower.state == "ENABLED", follower.state
        live.player.play(list(nights[1].emissions()), 20.0, camera="ATCamera")
        assert wait_for(lambda: composer_status(live)["done"].get(SKIPPED_IMAGE) == [1, True], 15.0)
        assert wait_for(lambda: f"cannot write {SKIPPED_IMAGE}" in log(), 15.0), log()[-2000:]
        assert follower.refresh(2.0) and follower.state == "ENABLED", follower.state
        assert not [p for t, p in drain_warnings() if t.startswith("ctl.skipped.")], "an exposure was skipped"
        # 2. the DAYOBS folder cannot be made: a regular file has its name (mkdir fails, also for root)
        mark = len(log())
        shutil.rmtree(day)
        day.write_text("not a folder\n")
        assert wait_for(lambda: f"still cannot write {PENDING_IMAGE}: [Errno 17] File exists" in log()[mark:], 15.0), \
            log()[-2000:]
        assert PENDING_IMAGE not in announced(live) and SKIPPED_IMAGE not in announced(live)
        # 3. the annex is usable again (after an outage of >= 11 s: two resends by the composer, two
        # retry cycles of the publisher): the kept headers are written and announced, once each
        time.sleep(max(0.0, failed_at + 11.5 - time.monotonic()))
        day.unlink()
        (day2 / f".{SKIPPED_IMAGE}.fits.{pub_pid}.tmp").unlink()
        assert wait_for(lambda: {PENDING_IMAGE, SKIPPED_IMAGE} <= set(announced(live)), 15.0), log()[-2000:]
        assert wait_for(lambda: any(t.startswith("ctl.warning.") and p["code"] == 1 and not p["active"]
                                    for t, p in drain_warnings()), 15.0), seen
        assert follower.refresh(2.0) and follower.state == "ENABLED", follower.state
    finally:
        warnings.close(linger=0)
        follower.close()
    return pub_pid


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    with live_latiss(tmp_path_factory.mktemp("annex_faults")) as live:
        yield Outage(live, _play_outage(live))


def test_annex_faults_keep_the_header_until_the_annex_is_usable(outage: Outage) -> None:
    """An unwritable annex costs no exposure: the CSC stays ENABLED (warning, not FAULT), an exposure
    taken meanwhile is composed and kept too, and both are written and announced once it is back."""
    live = outage.live
    annex = live.annex / "LATISS"
    for image, folder in ((PENDING_IMAGE, "20261125"), (SKIPPED_IMAGE, "20261126")):
        path = annex / folder / f"{image}.fits"
        ann = announced(live)[image]
        assert ann["url"].endswith(f"/LATISS/{folder}/{image}.fits")
        assert hashlib.md5(path.read_bytes()).hexdigest() == ann["checkSum"]
        h = primary(live, image)
        assert h["HDRSTAT"] == "COMPLETE" and h["OBSID"] == image and h["EXPTIME"] == 2.0
        # the side-car is written after the announcement: wait for it rather than race it
        assert wait_for(lambda image=image, folder=folder: (annex / folder / f"{image}.prov.json").exists(), 10.0)
        assert wait_for(lambda image=image: readable_json(annex_path(live, image, ".prov.json")), 10.0)
        assert prov(live, image)["imageName"] == image
    time.sleep(0.5)
    versions = [(s["id"], s["version"]) for s in live.reader.poll() if s["id"] in (PENDING_IMAGE, SKIPPED_IMAGE)]
    assert sorted(versions) == [(PENDING_IMAGE, 1.0), (SKIPPED_IMAGE, 1.0)]
    assert live.dep.pid("latiss:latiss-publisher") == outage.publisher_pid, "the publisher restarted"
    assert "Traceback" not in live.dep.log("latiss-publisher")


def test_pending_header_is_retried_once_per_cycle(outage: Outage) -> None:
    """During an annex outage a kept header is tried once per 5-s cycle, however often it is resent."""
    lines = [ln for ln in outage.live.dep.log("latiss-publisher").splitlines()
             if PENDING_IMAGE in ln and "still cannot write" in ln]
    stamps = [ln[:19] for ln in lines]  # 'YYYY-MM-DD hh:mm:ss': one retry cycle lasts 5 s
    assert stamps, "the kept header was never retried"
    assert len(stamps) == len(set(stamps)), f"several retries of {PENDING_IMAGE} in one cycle: {stamps}\n" + "\n".join(lines)
