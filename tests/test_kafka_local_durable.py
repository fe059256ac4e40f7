"""The durable embedded bus: Tansu's log in S3 (moto on loopback), so a broker killed with SIGKILL
and started again on the same port keeps its records and its consumer groups' offsets, and a record
written while it was gone is delivered once it is back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tools import kafka_local


def consume(consumer: Any, n: int, timeout: float = 30.0) -> list[bytes]:  # noqa: ANN401
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [m.value() for m in consumer.consume(num_messages=n - len(got), timeout=0.5) if m.error() is None]
    return got


def test_killed_broker_restarts_with_its_records_and_offsets(tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    with kafka_local.start(tmp_path, durable=True) as bus:
        assert bus.durable
        s = bus.settings("durable")
        admin = AdminClient(s.admin_config())
        admin.create_topics([NewTopic("lsst.durable.t", 1, 1)])["lsst.durable.t"].result(20)
        producer = Producer(s.producer_config())
        for i in range(5):
            producer.produce("lsst.durable.t", value=b"r%d" % i)
        assert producer.flush(20) == 0
        consumer = Consumer(s.consumer_config("g", **{"enable.auto.commit": False}))
        consumer.subscribe(["lsst.durable.t"])
        assert consume(consumer, 3) == [b"r0", b"r1", b"r2"]
        consumer.commit(asynchronous=False)
        consumer.close()
        port = bus.broker_addr
        with pytest.raises(kafka_local.LocalKafkaError):
            bus.restart_broker()  # it is still running
        bus.kill_broker()
        assert not bus.alive()
        producer.produce("lsst.durable.t", value=b"r5")  # written while the broker is gone
        bus.restart_broker()
        assert bus.alive() and bus.broker_addr == port
        assert producer.flush(30) == 0
        again = Consumer(s.consumer_config("g", **{"enable.auto.commit": False}))
        again.subscribe(["lsst.durable.t"])
        assert consume(again, 3) == [b"r3", b"r4", b"r5"]  # from the group's committed offset
        again.close()
