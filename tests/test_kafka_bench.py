"""hs-bench on Kafka, its floor: a plain confluent-kafka producer and consumer move every record."""

from __future__ import annotations

from tools.bench.kafka_floor import raw_rate
from tools.kafka_local import LocalKafka


def test_raw_broker_rate_reads_back_every_record(local_kafka: LocalKafka, subname: str) -> None:
    r = raw_rate(local_kafka.settings(subname), n=500, size=100, timeout=30)
    assert r["received"] == 500 and r["not_delivered"] == 0
    assert r["produce_per_s"] > 0 and r["consume_per_s"] > 0 and r["end_to_end_per_s"] > 0
