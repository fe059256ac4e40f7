"""Ingest on Kafka (``hs-bench --bus kafka``): the same steps as :mod:`tools.bench.ingest`, with a
Kafka writer of ESS:301 temperature in place of the DDS one.

The writer stands for the summit's ESS CSC: ts_salobj's wire (Avro with Confluent framing, the
registry's schema id, key and private fields as :class:`protocols.kafka_bus.KafkaWriter` writes
them), written as fast as one Python producer can, pacing and bursts as the DDS writer's. A step's
time includes the producer's flush: a sample counts as written once the broker has acknowledged it,
so the achieved rate is what the broker took. Loss is counted exactly as on DDS (the cache's sample
count against what was written); the ZeroMQ part (listener -> cache) from the cache's gap count,
the rest is ``lost_kafka`` (records the broker refused or that never reached the listener: on a
durable log, none should be). A listener behind the writer is not a loss: the step waits until the
cache stops counting, as on DDS.
"""

from __future__ import annotations

import os
import time
from typing import Any

from protocols.timescale import tai_now
from tools.bench import ingest
from tools.runner import Deployment

#: Producer settings of the ingest writer: as many records in flight as librdkafka allows.
QUEUE_MAX = 500_000


class KafkaIngestWriter:
    """ESS:301 temperature onto Kafka at a paced rate (the interface of :class:`ingest.Writer`)."""

    def __init__(self, env: dict[str, str], min_tai: float = 0.0):
        from protocols.bus import KafkaSal

        self.bus = KafkaSal.from_env(env)
        self.writer = self.bus.writer(ingest.COMPONENT, ingest.TOPIC, identity=f"{ingest.COMPONENT}:{ingest.INDEX}")
        self.bus.start()
        self.values = {"numChannels": 4, "temperatureItem": [11.5] * 16, "sensorName": "bench", "location": "hs-bench"}
        self.offset = max(0.0, min_tai + 1.0 - tai_now())  # stamps after the nights already played
        self.failed_before = 0

    @property
    def kafka(self) -> Any:  # noqa: ANN401 - the KafkaWriter of our identity
        return self.bus.writer_of(self.writer.identity, self.writer.topic)

    @property
    def sample_bytes(self) -> int:
        """Size of one record's value (Confluent header and Avro body)."""
        from protocols import kafka_wire as kw

        w = self.kafka
        wt = w._topics[self.writer.topic.name]
        data = wt.codec.complete(kw.stamp({**self.values, "salIndex": ingest.INDEX, "timestamp": 0.0}, rev_code=wt.rev_code,
                                          identity=w.identity, origin=w.origin, snd_stamp=0.0, seq_num=1))  # fmt: skip
        return len(kw.encode_value(wt.schema_id or 1, wt.codec, data))

    def wait_matched(self, timeout: float) -> bool:
        """A Kafka log keeps what is written for a listener that subscribes later: nothing to wait for."""
        return True

    @property
    def failed(self) -> int:
        return self.kafka.failed

    def run(self, rate: float, seconds: float) -> tuple[int, float]:
        """Write at ``rate`` samples/s for ``seconds``, then flush; (samples written, seconds taken)."""
        n = 0
        write, values = self.writer.write, self.values
        start = time.perf_counter()
        for burst in ingest.paced(rate, seconds):
            tai = tai_now() + self.offset
            for _ in range(burst):
                write({**values, "timestamp": tai}, sal_index=ingest.INDEX, snd_stamp=tai)
            n += burst
        left = self.bus.flush_pending(max(30.0, seconds))
        return n - left, time.perf_counter() - start

    def close(self) -> None:
        self.bus.close()


def run_ingest_kafka(dep: Deployment, instrument: str, rates: list[float], step_s: float, sustain_s: float,
                     min_tai: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """:func:`ingest.run_ingest` with the Kafka writer; each step's non-ZeroMQ loss is ``lost_kafka``."""
    writer = KafkaIngestWriter({**os.environ, **dep.env}, min_tai)
    try:
        out = ingest.run_ingest(dep, instrument, rates, step_s, sustain_s, min_tai, writer=writer)
        for s in [*out.get("steps", []), *out.get("sustain_runs", [])]:
            if "lost_dds" in s:
                s["lost_kafka"] = s.pop("lost_dds")
        out["bus"] = "kafka"
        out["not_delivered"] = writer.failed
        return out
    finally:
        writer.close()
