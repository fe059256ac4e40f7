"""hs-publisher's announcer on Kafka across a broker outage: an announcement the broker did not
acknowledge in time raises (the header is kept and retried), and the retry of the same file does not
announce it a second time once the first record is delivered after the broker came back."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from procs.publisher import KafkaAnnouncer
from protocols.config import load_instance
from tests.kafka_harness import PlainKafkaReader
from tools import kafka_local


@pytest.fixture(scope="module")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.LocalKafka]:
    """A broker that keeps its log across a restart (S3-backed)."""
    with kafka_local.start(tmp_path_factory.mktemp("kafka"), durable=True) as bus:
        yield bus


def test_announcement_retried_after_an_outage_is_written_once(
    local_kafka: kafka_local.LocalKafka, subname: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = local_kafka.env(subname)
    for k, v in {**env, "HS_BUS": "kafka", "HS_STATE_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    ann = KafkaAnnouncer(load_instance("LATISS"))
    try:
        ann.announce("http://127.0.0.1:1/LATISS/20261124/AT_O_20261124_000001.fits", 1, 2880, "a" * 32, "AT_O_20261124_000001")
        local_kafka.kill_broker()
        second = ("http://127.0.0.1:1/LATISS/20261124/AT_O_20261124_000002.fits", 1, 2880, "b" * 32, "AT_O_20261124_000002")
        with pytest.raises(ConnectionError):
            ann.announce(*second)  # not acknowledged: the publisher keeps the header and retries it
        local_kafka.restart_broker()
        ann.announce(*second)  # the retry
        ann.announce("http://127.0.0.1:1/LATISS/20261124/AT_O_20261124_000003.fits", 1, 2880, "c" * 32, "AT_O_20261124_000003")
    finally:
        ann.bus.close()
    reader = PlainKafkaReader(env, "ATHeaderService", "logevent_largeFileObjectAvailable")
    try:
        got = reader.wait(lambda g: any(a["id"].endswith("3") for a in g), timeout=60)
        got += reader.poll(2.0)
    finally:
        reader.close()
    assert [a["id"] for a in got] == ["AT_O_20261124_000001", "AT_O_20261124_000002", "AT_O_20261124_000003"]
