"""hs-bench's ingest writer on Kafka: ESS:301 temperature as ts_salobj writes it, every record
acknowledged by the broker before a step ends, so written counts what the broker took."""

from __future__ import annotations

from tests.kafka_harness import PlainKafkaReader
from tools.bench import ingest
from tools.bench.ingest_kafka import KafkaIngestWriter
from tools.kafka_local import LocalKafka


def test_ingest_writer_puts_every_sample_on_the_broker(local_kafka: LocalKafka, subname: str) -> None:
    env = local_kafka.env(subname)
    writer = KafkaIngestWriter(env, min_tai=0.0)
    try:
        assert writer.wait_matched(1.0)
        written, took = writer.run(rate=500.0, seconds=0.5)
        assert written > 0 and took >= 0.5
        assert writer.failed == 0
        assert 100 < writer.sample_bytes < 400
    finally:
        writer.close()
    reader = PlainKafkaReader(env, ingest.COMPONENT, ingest.TOPIC)
    try:
        got = reader.wait(lambda g: len(g) >= written, timeout=30)
    finally:
        reader.close()
    assert len(got) == written
    assert {r["salIndex"] for r in got} == {ingest.INDEX}
    assert [r["private_seqNum"] for r in got] == list(range(1, written + 1))
    assert all(r["private_identity"] == "ESS:301" and r["timestamp"] == r["private_sndStamp"] for r in got)
