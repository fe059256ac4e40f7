"""The Kafka floor: what the broker itself moves, measured with a plain confluent-kafka producer and
consumer (no SAL, no Avro, no Header Service code), in the same run as the Header Service on Kafka.

One fresh topic, one partition; the producer writes ``n`` values of ``size`` bytes as fast as the
client takes them (with the producer settings of the bus, Tansu's included), the consumer reads
them all back from the first offset. Rates are samples per second.
"""

from __future__ import annotations

import os
import time
from typing import Any


def raw_rate(settings: Any, n: int = 20000, size: int = 200, timeout: float = 60.0) -> dict[str, Any]:
    """{produce_per_s, consume_per_s, end_to_end_per_s, n, size, received}: the broker's floor."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"lsst.{settings.subname}.hsbench.raw{os.getpid()}x{time.time_ns() % 10**9}"
    admin = AdminClient(settings.admin_config())
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=settings.replication_factor)])[topic].result(timeout)
    producer = Producer(settings.producer_config())
    value = os.urandom(size)
    t0 = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                producer.produce(topic, value=value)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(timeout)
    t_produced = time.perf_counter()
    consumer = Consumer(settings.consumer_config(f"hsbench-{os.getpid()}-{time.time_ns()}",
                                                  **{"enable.auto.commit": False, "auto.offset.reset": "earliest"}))  # fmt: skip
    consumer.subscribe([topic])
    received = 0
    t_first = None
    deadline = time.monotonic() + timeout
    while received < n - left and time.monotonic() < deadline:
        got = [m for m in consumer.consume(num_messages=1000, timeout=0.5) if m.error() is None]
        if got and t_first is None:
            t_first = time.perf_counter()
        received += len(got)
    t_done = time.perf_counter()
    consumer.close()
    admin.delete_topics([topic])
    produce_s = t_produced - t0
    consume_s = t_done - (t_first or t_done)
    return {
        "n": n,
        "size": size,
        "received": received,
        "not_delivered": left,
        "produce_per_s": round(n / produce_s) if produce_s > 0 else None,
        "consume_per_s": round(received / consume_s) if consume_s > 0 else None,
        "end_to_end_per_s": round(received / (t_done - t0)) if t_done > t0 else None,
    }
