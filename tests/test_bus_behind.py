"""A camera event published while other topics are still behind it on the bus (on Kafka, a backlog
the listener could not read within its catch-up) must not give a header that says COMPLETE: the
listener sends ``ctl.behind.<instrument>`` (protocols.messages.BusBehind) before the event, in its
sample stream, and the cache records the span as one the bus was not observed in, which a
collection over it reports (the composer then writes the header INCOMPLETE with the reason)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from procs import cache as cache_module
from procs.common import Counters
from procs.listener import KafkaSource, needed_topics
from protocols import kafka_bus as kb
from protocols import kafka_wire as kw
from protocols import salrecord
from protocols.config import load_instance
from protocols.envelope import EnvelopeError, Sender
from protocols.messages import BusBehind, CollectReply, CollectRequest
from tests.test_replies import ask_cache, cache  # noqa: F401 (a real CacheServer holding ESS.airFlow at 10 and 20 s)
from tools import kafka_local

#: A guard against a hung test, not a measurement.
PATIENCE_S = 60.0


def test_a_behind_notice_decodes_what_it_encodes_and_refuses_a_span_that_is_not_one() -> None:
    note = BusBehind(12.0, 18.5, ["ESS.temperature", "ATDome.position"])
    assert BusBehind.decode(json.loads(json.dumps(note.encode()))) == note
    for bad, reason in (
        ({"t0": 18.0, "t1": 12.0}, "not a span"),
        ({"t0": math.nan, "t1": 12.0}, "not a span"),
        ({"t0": 0.0, "t1": 12.0}, "not a span"),
        ({"t1": 12.0}, "t0"),
        ({"t0": 1.0, "t1": 2.0, "topics": "ESS.temperature"}, "topics is not a list of text"),
        ([1.0, 2.0], "not an object"),
    ):
        with pytest.raises(EnvelopeError, match=reason):
            BusBehind.decode(bad)


def collect_outages(server: Any, start: float) -> list[list[float]]:
    _topic, payload = ask_cache(server, CollectRequest({"start": start}, {"start": ["ESS.airFlow:301"]}).encode(), "ctl.request.collect")
    return CollectReply.decode(payload).outages or []


def test_the_cache_records_a_behind_span_and_a_collection_over_it_reports_it(cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    listener = Sender("listener.LATISS@test:1:0", first_seq=3)  # the fixture's listener, after its two samples
    cache.on_sample(listener.frames("ctl.behind.LATISS", BusBehind(12.0, 18.0, ["ESS.temperature"]).encode()))
    assert cache.counts["behind_spans"] == 1 and cache.counts["gaps"] == 0 and cache.counts["bad_messages"] == 0
    assert collect_outages(cache, start=19.0) == [[12.0, 18.0]]  # its window, 9 .. 19 s, overlaps the span
    assert collect_outages(cache, start=40.0) == []

    cache.on_sample(listener.frames("ctl.behind.LATISS", {"t0": "soon", "t1": 18.0}))  # refused with its reason, counted
    assert cache.counts["bad_messages"] == 1 and cache.outages == [[12.0, 18.0]]

    monkeypatch.setattr(cache_module, "REFILL_AFTER", 0.0)
    sample = {"component": "ESS", "topic": "airFlow", "salIndex": 301, "sndStamp": 15.0, "srcStamp": None, "rcvStamp": 15.0,
              "data": {"speed": 9.5, "private_sndStamp": 15.0}}  # fmt: skip
    cache.on_sample(listener.frames("sal.ESS.airFlow", salrecord.encode_sample("ESS", "airFlow", sample)))
    assert collect_outages(cache, start=19.0) == []  # what was behind arrived: the span is cleared


@dataclass
class Backlog:
    """A LATISS KafkaSource on the embedded bus whose ESS.temperature partition holds records the
    source knows of but never gets (paused after its fetcher learned their end): a topic behind."""

    source: KafkaSource
    writer: kb.KafkaWriter
    event: kw.KafkaTopic
    counts: Counters
    got: list[tuple[bytes, bytes, int]]
    deadline: float


@pytest.fixture
def backlog(local_kafka: kafka_local.LocalKafka, subname: str) -> Iterator[Backlog]:
    from confluent_kafka import TopicPartition

    settings = local_kafka.settings(subname)
    cfg = load_instance("LATISS")
    source = KafkaSource(cfg, needed_topics(cfg), settings=settings)
    weather = kw.kafka_topic(subname, "ESS", "temperature")
    event = kw.kafka_topic(subname, "ATCamera", "logevent_endOfImageTelemetry")
    b = Backlog(source, kb.KafkaWriter(settings, [weather, event], identity="HSSim", origin=9), event, Counters(), [],
                time.monotonic() + PATIENCE_S)  # fmt: skip
    source.start()
    try:
        while (not source.reader.assignment() or None in source.reader.lagging().values()) and time.monotonic() < b.deadline:
            b.got += source.poll(0.05, b.counts)  # joined, and the broker told the partitions' ends
        b.writer.start()
        for i in range(3):
            b.writer.write(weather, {"salIndex": 301, "temperatureItem": [10.0 + i] + [0.0] * 15})
        assert b.writer.flush() == 0
        while (weather.name, 0) not in source.reader.lagging() and time.monotonic() < b.deadline:
            time.sleep(0.02)  # the fetcher learns the new end; nothing is taken from it
        source.reader._consumer.pause([TopicPartition(weather.name, 0)])  # behind from now on: a backlog never read
        yield b
    finally:
        source.close()


def test_the_listener_says_so_before_a_camera_event_it_publishes_with_a_topic_behind(backlog: Backlog) -> None:
    source = backlog.source
    source.CATCH_UP_S = 0.3
    stamp = backlog.writer.write(backlog.event, {"imageName": "AT_O_20261203_000001"})["private_sndStamp"]
    assert backlog.writer.flush() == 0
    got = backlog.got
    while not any(f == b"sal.ATCamera.endOfImageTelemetry" for f, _, _ in got) and time.monotonic() < backlog.deadline:
        got += source.poll(0.2, backlog.counts)
    frames = [f for f, _, _ in got]
    i = frames.index(b"sal.ATCamera.endOfImageTelemetry")
    assert frames[i - 1] == b"ctl.behind.LATISS", frames
    note = BusBehind.decode(json.loads(got[i - 1][1]))
    assert note.topics == ["ESS.temperature"] and note.t1 == stamp
    assert note.t0 == pytest.approx(stamp - source.max_age)  # nothing read from it: as far back as a header reads
    assert got[i - 1][2] == 0 and backlog.counts["events_published_behind"] == 1
    assert b"sal.ESS.temperature" not in frames


def test_a_listener_whose_fetches_starve_while_records_wait_says_so_once(backlog: Backlog, caplog: pytest.LogCaptureFixture) -> None:
    source = backlog.source
    source.STARVED_S = 0.5
    with caplog.at_level(logging.WARNING, logger="listener"):
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            backlog.got += source.poll(0.1, backlog.counts)
    said = [r.getMessage() for r in caplog.records if "no record for" in r.getMessage()]
    assert len(said) == 1 and "ESS.temperature" in said[0] and "fetch.wait.max.ms" in said[0], said
    assert backlog.counts["fetches_starved"] == 1
