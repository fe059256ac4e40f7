"""hs-tap --bus kafka: show the SAL records of an instance's Kafka topics as they are written.

One line per record: Kafka topic, partition and offset, key, schema id and the decoded value (or,
with ``--json``, one JSON object per record). A record that cannot be read (no magic byte, unknown
schema id, truncated or malformed body) is shown as ``BAD`` with its topic, offset and reason, and
counted; it never stops the tap. The tap reads in a consumer group of its own and commits nothing,
so it never disturbs the Header Service's own offsets.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from typing import Any, Iterable, TextIO

from protocols import kafka_wire as kw


def instance_topics(instrument: str, subname: str) -> list[kw.KafkaTopic]:
    """Every topic the instance reads (keyword map, camera triggers) or its CSC writes and reads."""
    from procs.csc import COMMANDS, EVENTS
    from procs.listener import needed_topics
    from protocols.bus import _sal_name
    from protocols.config import load_instance

    cfg = load_instance(instrument)
    pairs = set(needed_topics(cfg))
    pairs |= {(cfg.csc, e) for e in (*EVENTS, "ackcmd", "largeFileObjectAvailable")}
    pairs |= {(cfg.csc, f"command_{c}") for c in COMMANDS}
    return sorted({kw.kafka_topic(subname, c, _sal_name(c, n)) for c, n in pairs}, key=lambda t: t.name)


def _safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, list):
        return [_safe(x) for x in v]
    return v


def record_line(topic: str, partition: int, offset: int, key: bytes, schema_id: int, data: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps({"topic": topic, "partition": partition, "offset": offset, "key": key.decode("utf-8", "replace"),
                           "schema_id": schema_id, "value": {k: _safe(v) for k, v in data.items()}})  # fmt: skip
    fields = ", ".join(f"{k}={v!r}" for k, v in data.items() if not k.startswith("private_") or k == "private_seqNum")
    return f"{topic} [{partition}] @{offset} key={key.decode('utf-8', 'replace')!r} schema {schema_id}: {fields}"


def bad_line(topic: str, partition: int, offset: int, reason: str, as_json: bool) -> str:
    if as_json:
        return json.dumps({"topic": topic, "partition": partition, "offset": offset, "bad": reason})
    return f"BAD {topic} [{partition}] @{offset}: {reason}"


def run(
    topics: Iterable[kw.KafkaTopic],
    settings: Any,
    out: TextIO,
    err: TextIO,
    *,
    from_start: bool = False,
    count: int | None = None,
    timeout: float | None = None,
    as_json: bool = False,
) -> int:
    from confluent_kafka import Consumer

    from protocols.kafka_bus import RegistryClient, create_topics

    topics = list(topics)
    registry = RegistryClient(settings.registry_url)
    registry.wait(10.0)
    create_topics(settings, topics)
    group = f"hs-tap-{os.getpid()}-{time.time_ns()}"
    consumer = Consumer(settings.consumer_config(group, **{"enable.auto.commit": False, "auto.offset.reset": "earliest"}))

    def assign(c: Any, parts: list[Any]) -> None:
        for tp in parts:
            low, high = c.get_watermark_offsets(tp, timeout=10.0, cached=False)
            tp.offset = low if from_start else high
        c.assign(parts)

    consumer.subscribe([t.name for t in topics], on_assign=assign)
    print(f"hs-tap: reading {len(topics)} Kafka topics ({'from the first record' if from_start else 'new records'})", file=err, flush=True)
    seen, bad = 0, Counter()
    end = None if timeout is None else time.monotonic() + timeout
    try:
        while (count is None or seen < count) and (end is None or time.monotonic() < end):
            for msg in consumer.consume(num_messages=100, timeout=0.2):
                if msg.error() is not None:
                    continue
                name, part, off = msg.topic(), msg.partition(), msg.offset()
                try:
                    schema_id, data = kw.decode_value(msg.value(), registry.codec, (), topic=name, offset=off)
                    print(record_line(name, part, off, msg.key() or b"", schema_id, data, as_json), file=out, flush=True)
                except kw.WireError as exc:
                    bad[exc.reason] += 1
                    print(bad_line(name, part, off, str(exc), as_json), file=out, flush=True)
                except kw.SchemaSourceUnavailable as exc:
                    bad["registry unavailable"] += 1
                    print(bad_line(name, part, off, str(exc), as_json), file=out, flush=True)
                seen += 1
                if count is not None and seen >= count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        print(f"hs-tap: {seen} records, {sum(bad.values())} bad" + (f" ({dict(bad)})" if bad else ""), file=err, flush=True)
    return 1 if count is not None and seen < count else 0
