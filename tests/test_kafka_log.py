"""librdkafka's log folded (protocols/kafka_log.py): a client at a broker that is gone says so once,
then once a minute with how many attempts failed meanwhile, not at every reconnection attempt."""

from __future__ import annotations

import logging
import time

import pytest

from protocols.kafka_log import LOG, RepeatFolder, with_log
from tools.kafka_local import free_port


def record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, msg, None, None)


def test_repeats_pass_once_per_period_with_how_many_were_folded() -> None:
    now = [0.0]
    folder = RepeatFolder(every_s=60.0, clock=lambda: now[0])
    first = record("FAIL [rdkafka#consumer-2] Connect to ipv4#127.0.0.1:41257 failed: Connection refused (after 0ms)")
    assert folder.filter(first)
    for i in range(40):
        now[0] += 0.05
        assert not folder.filter(record(f"FAIL [rdkafka#consumer-2] Connect to ipv4#127.0.0.1:41257 failed: Connection refused (after {i}ms)"))
    assert folder.filter(record("COMMITFAIL [rdkafka#consumer-2] Offset commit failed"))  # another message passes
    now[0] = 61.0
    later = record("FAIL [rdkafka#consumer-2] Connect to ipv4#127.0.0.1:41257 failed: Connection refused (after 3ms)")
    assert folder.filter(later)
    assert later.getMessage().endswith("(and 40 more like it in 61 s)")
    now[0] = 62.0
    assert not folder.filter(record("FAIL [rdkafka#consumer-2] Connect to ipv4#127.0.0.1:41257 failed: Connection refused (after 9ms)"))


def test_a_consumer_at_a_broker_that_is_gone_logs_through_python_folded(caplog: pytest.LogCaptureFixture) -> None:
    from confluent_kafka import Consumer

    LOG.filters[0].seen.clear()  # what earlier tests of this process logged
    addr = f"127.0.0.1:{free_port()}"  # nothing listens there
    consumer = Consumer(with_log({"bootstrap.servers": addr, "group.id": "hs-log-test", "enable.auto.commit": False}))
    consumer.subscribe(["lsst.logtest.ATCamera.logevent_endReadout"])
    with caplog.at_level(logging.DEBUG, logger=LOG.name):
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            consumer.poll(0.1)  # serves the client's log queue
    consumer.close()
    refused = [r for r in caplog.records if r.name == LOG.name and "Connection refused" in r.getMessage()]
    folded = sum(n for key, (_t, n) in LOG.filters[0].seen.items() if "Connection refused" in key)
    assert len(refused) == 1, [r.getMessage() for r in refused]
    assert folded >= 3  # librdkafka tried again and again; the log said it once
