"""Kafka test harness: the embedded bus (Tansu + hs-registry), one per test module, and a fresh
topic subname per test so tests never see each other's topics."""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import time
import urllib.request
from typing import Any, Callable, Iterator

import pytest

from tools import kafka_local

_names = itertools.count()


@pytest.fixture(scope="module")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.LocalKafka]:
    with kafka_local.start(tmp_path_factory.mktemp("kafka")) as bus:
        yield bus


@pytest.fixture
def subname() -> str:
    """A LSST_TOPIC_SUBNAME of this test's own."""
    return f"t{os.getpid()}x{next(_names)}"


class PlainKafkaReader:
    """Reads one SAL topic from its first record without the Header Service's code: a plain
    confluent-kafka consumer, the registry's schema by id over HTTP and fastavro, as any other
    observatory program (the EFD's connector, a ts_salobj Remote) would read it."""

    def __init__(self, env: dict[str, str], component: str, sal_name: str):
        from confluent_kafka import Consumer

        self.registry = env["LSST_SCHEMA_REGISTRY_URL"]
        self.topic = f"lsst.{env['LSST_TOPIC_SUBNAME']}.{component}.{sal_name}"
        self.consumer = Consumer({"bootstrap.servers": env["LSST_KAFKA_BROKER_ADDR"], "group.id": f"plain-{next(_names)}-{os.getpid()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "session.timeout.ms": 1000, "heartbeat.interval.ms": 200})  # fmt: skip
        self.consumer.subscribe([self.topic])
        self.schemas: dict[int, Any] = {}
        self.got: list[dict[str, Any]] = []

    def _schema(self, schema_id: int) -> Any:
        import fastavro

        if schema_id not in self.schemas:
            with urllib.request.urlopen(f"{self.registry}/schemas/ids/{schema_id}", timeout=10) as resp:
                self.schemas[schema_id] = fastavro.parse_schema(json.loads(json.loads(resp.read())["schema"]))
        return self.schemas[schema_id]

    def poll(self, timeout: float = 0.2) -> list[dict[str, Any]]:
        import fastavro

        out = []
        for msg in self.consumer.consume(num_messages=500, timeout=timeout):
            if msg.error() is not None:
                continue
            value = msg.value()
            assert value[0] == 0, f"no magic byte at {self.topic} offset {msg.offset()}"
            schema_id = struct.unpack(">I", value[1:5])[0]
            out.append(fastavro.schemaless_reader(io.BytesIO(value[5:]), self._schema(schema_id), None))
        self.got += out
        return out

    def wait(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not done(self.got) and time.monotonic() < deadline:
            self.poll()
        return self.got

    def close(self) -> None:
        self.consumer.close()
