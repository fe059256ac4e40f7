"""What a Kafka reader knows it has not read yet (KafkaReader.lagging), against the embedded bus.

The listener holds a camera event until the other topics are read up to it (procs/listener.py
KafkaSource.catch_up), and asks the reader which partitions are behind. Right after an assignment
(at start, or after the broker was gone longer than the session timeout) the fetcher knows neither
positions nor ends: the reader asks the broker, so a topic whose records have not been fetched yet
is still behind, and a topic read to its end before a restart is not."""

from __future__ import annotations

import time

import pytest

from protocols import kafka_bus as kb
from protocols import kafka_wire as kw
from protocols.kafka_config import KafkaSettings
from tools import kafka_local


#: A guard against a hung test, not a measurement.
PATIENCE_S = 60.0


@pytest.fixture
def settings(local_kafka: kafka_local.LocalKafka, subname: str) -> KafkaSettings:
    return local_kafka.settings(subname)


def assigned(reader: kb.KafkaReader) -> list[kb.BusSample]:
    """Poll without waiting until the group assigns the partitions; what came with it."""
    got: list[kb.BusSample] = []
    end = time.monotonic() + PATIENCE_S
    while not reader.assignment() and time.monotonic() < end:
        got += reader.poll(timeout=0)
        time.sleep(0.005)
    assert reader.assignment(), "no assignment from the group"
    return got


def answered(reader: kb.KafkaReader) -> dict[tuple[str, int], int | None]:
    """lagging() once the broker has answered the reader's questions about its assignment."""
    end = time.monotonic() + PATIENCE_S
    while None in (lagging := reader.lagging()).values() and time.monotonic() < end:
        time.sleep(0.01)
    return lagging


def test_unfetched_partition_is_behind_and_one_read_before_a_restart_is_not(settings: KafkaSettings) -> None:
    sub = settings.subname
    event = kw.kafka_topic(sub, "ATCamera", "logevent_endReadout")
    weather = kw.kafka_topic(sub, "ESS", "temperature")
    writer = kb.KafkaWriter(settings, [event, weather], identity="HSSim", origin=7)
    writer.start()
    for i in range(3):
        writer.write(weather, {"salIndex": 301, "temperatureItem": [10.0 + i] + [0.0] * 15})
    assert writer.flush() == 0
    group = f"hs-lag-{sub}"

    reader = kb.KafkaReader(settings, [event, weather], group_id=group)
    reader.start()
    try:
        early = assigned(reader)
        assert not early  # the assignment comes before any fetch
        assert reader.lagging() == {(event.name, 0): None, (weather.name, 0): None}  # asked, not answered yet
        assert answered(reader) == {(weather.name, 0): 3}  # nothing fetched yet: the broker told
        got = early
        end = time.monotonic() + PATIENCE_S
        while len(got) < 3 and time.monotonic() < end:
            got += reader.poll(timeout=0.5)
        assert [s.data["temperatureItem"][0] for s in got] == [10.0, 11.0, 12.0]
        assert reader.lagging() == {}
    finally:
        reader.close(commit=True)

    restarted = kb.KafkaReader(settings, [event, weather], group_id=group)
    restarted.start()
    try:
        assert assigned(restarted) == []
        assert answered(restarted) == {}  # read to the end and committed before the restart
        writer.write(weather, {"salIndex": 301, "temperatureItem": [13.0] + [0.0] * 15})
        assert writer.flush() == 0
        end = time.monotonic() + PATIENCE_S
        while not restarted.lagging() and time.monotonic() < end:
            time.sleep(0.05)  # the fetcher learns the new end; nothing is consumed meanwhile
        assert restarted.lagging() == {(weather.name, 0): 4}
    finally:
        restarted.close(commit=False)
