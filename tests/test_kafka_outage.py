"""The Kafka broker gone mid-night: a LATISS night on the embedded bus whose broker is killed with
SIGKILL after the first header and started again a few seconds later on the same port and storage
(the durable, S3-backed Tansu of tools/kafka_local.py). From outside: every exposure is announced on
the bus and written, nothing is skipped, no process of the instance died (each reconnected and
resumed from its offsets), the CSC stayed ENABLED, and, the log having kept every sample the
simulator wrote during the outage, every header is COMPLETE with no undefined keyword.

The listener reads a backlog after the outage (and always behind this slow S3-backed broker): Kafka
orders records per topic only, so a camera event read before the other topics' earlier samples
would be composed with stale telemetry; the listener holds the event until the other topics are
read to their end as its fetcher knows it (procs/listener.py KafkaSource.catch_up)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from tests.kafka_harness import PlainKafkaReader
from tests.test_faults import night_yaml
from tests.test_kafka_pipeline import hs_sim, headers, images_of
from tools import kafka_local
from tools.runner import Deployment

ENABLED = 2  # ts_salobj State.ENABLED
OUTAGE_S = 4.0
PROGRAMS = ("listener", "cache", "composer", "publisher", "csc")


@pytest.fixture(scope="module")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.LocalKafka]:
    """This module's bus keeps its log in S3: a restarted broker has its records and offsets."""
    with kafka_local.start(tmp_path_factory.mktemp("kafka"), durable=True) as bus:
        yield bus


def test_broker_killed_and_restarted_mid_night(
    deployment_factory: Callable[..., Deployment], local_kafka: kafka_local.LocalKafka, tmp_path: Path
) -> None:
    dep = deployment_factory(("LATISS",), bus="kafka")
    pids = {p: dep.pid(f"latiss:latiss-{p}") for p in PROGRAMS}
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(night_yaml(6, cadence=5.0, exptime=1.0)))
    images = images_of(path)
    announced = PlainKafkaReader(dep.env, "ATHeaderService", "logevent_largeFileObjectAvailable")
    sim = hs_sim(dep, path, speed=2.0)  # ~15 s of wall time
    try:
        announced.wait(lambda g: images[0] in {a["id"] for a in g}, timeout=90)  # the night is under way
        assert images[0] in {a["id"] for a in announced.got}, dep.log("latiss-publisher")[-3000:]
        local_kafka.kill_broker()  # mid-night: the simulator goes on writing into its producer
        time.sleep(OUTAGE_S)
        local_kafka.restart_broker()
        out, _ = sim.communicate(timeout=180)
        assert sim.returncode == 0, out
        got = announced.wait(lambda g: {a["id"] for a in g} >= set(images), timeout=120)
    finally:
        if sim.poll() is None:
            sim.kill()
        announced.close()
    ids = [a["id"] for a in got]
    assert set(ids) >= set(images), (images, ids, dep.log("latiss-publisher")[-3000:], dep.log("latiss-composer")[-3000:])
    assert all(images.count(i) <= ids.count(i) for i in images)
    assert "skipped" not in dep.log("latiss-composer"), dep.log("latiss-composer")[-3000:]
    assert {p: dep.pid(f"latiss:latiss-{p}") for p in PROGRAMS} == pids  # reconnected, not restarted
    cache_log = dep.log("latiss-cache")
    assert "what it missed is an outage" not in cache_log and "bus not observed" not in cache_log, cache_log[-3000:]
    for image, (h, warnings, text) in headers(dep, [a for a in got if a["id"] in images]).items():
        assert h["HDRSTAT"].strip() == "COMPLETE", (image, h.get("HDRNOTE"))
        assert warnings == 0, text  # no undefined keyword: every sample written in the outage arrived
    states = PlainKafkaReader(dep.env, "ATHeaderService", "logevent_summaryState")
    try:
        seen = states.wait(lambda g: bool(g), timeout=30)
    finally:
        states.close()
    states_seen = [s["summaryState"] for s in seen]
    assert ENABLED in states_seen and set(states_seen[states_seen.index(ENABLED) :]) == {ENABLED}, states_seen
