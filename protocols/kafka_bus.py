"""A thin SAL-over-Kafka client, wire-compatible with ts_salobj 8.

- :class:`RegistryClient`: the five schema registry calls, stdlib HTTP, cached.
- :class:`KafkaWriter`: creates its topics (one partition; events ``cleanup.policy=compact``),
  registers our schemas at start and looks each schema id up at its first write (as ts_salobj's
  serializers do), writes samples with the private fields and key ts_salobj writes.
- :class:`KafkaReader`: reads a set of topics in a consumer group and returns decoded samples; the
  caller commits what it has handled, so a reader restarted in the same group resumes there. A record
  that cannot be read (no magic byte, unknown schema id, truncated body, a schema lacking a field the
  caller reads) is counted and logged with its topic and offset, and skipped; a registry that does not
  answer is not the record's fault: the record is read again later.

Topics are named by :class:`protocols.kafka_wire.KafkaTopic` (subname, component, SAL name).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from protocols import avro_schema as av
from protocols import kafka_wire as kw
from protocols.envelope import tai_now
from protocols.kafka_config import KafkaSettings
from protocols.kafka_ends import PartitionQuestions
from protocols.kafka_log import with_log
from protocols.timescale import utc_from_tai

log = logging.getLogger("kafka_bus")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_SEQ_NUM = (1 << 31) - 1
#: How long an id the registry does not know stays "unknown" before we ask again.
NEGATIVE_CACHE_S = 5.0


class RegistryUnavailable(kw.SchemaSourceUnavailable):
    """The schema registry did not answer (or answered 5xx)."""


class RegistryRefused(RuntimeError):
    """The registry answered with an error (a schema it will not take, a subject it does not have)."""

    def __init__(self, status: int, code: Any, message: str):
        super().__init__(f"schema registry: HTTP {status}, error {code}: {message}")
        self.status, self.code = status, code


class RegistryClient:
    """The Confluent registry calls SAL clients make, with the answers cached (ids never change)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._by_id: dict[int, kw.AvroCodec] = {}
        self._unknown: dict[int, float] = {}

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            try:
                answer = json.loads(err.read())
                code, message = answer.get("error_code"), answer.get("message", "")
            except (ValueError, AttributeError):
                code, message = None, err.reason
            if err.code >= 500:
                raise RegistryUnavailable(f"schema registry {self.url}: HTTP {err.code}: {message}") from None
            raise RegistryRefused(err.code, code, str(message)) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailable(f"schema registry {self.url} unreachable: {reason}") from None

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        return int(self._call("POST", f"/subjects/{quote(subject, safe='')}/versions", {"schema": json.dumps(schema)})["id"])

    def lookup(self, subject: str, schema: Mapping[str, Any]) -> int:
        return int(self._call("POST", f"/subjects/{quote(subject, safe='')}", {"schema": json.dumps(schema)})["id"])

    def codec(self, schema_id: int) -> kw.AvroCodec | None:
        """The codec of a registered schema id; None if the registry does not have it."""
        codec = self._by_id.get(schema_id)
        if codec is not None:
            return codec
        if time.monotonic() - self._unknown.get(schema_id, -1e9) < NEGATIVE_CACHE_S:
            return None
        try:
            answer = self._call("GET", f"/schemas/ids/{int(schema_id)}")
        except RegistryRefused as exc:
            if exc.status == 404:
                self._unknown[schema_id] = time.monotonic()
                return None
            raise
        try:
            codec = kw.AvroCodec(json.loads(answer["schema"]))
        except Exception as exc:  # noqa: BLE001 (a schema we cannot use is an unknown one, for this record)
            raise kw.UnknownSchemaId(f"id {schema_id}: the registry's schema is unusable: {exc}") from None
        self._by_id[schema_id] = codec
        return codec

    def wait(self, deadline_s: float) -> None:
        """Until the registry answers (``GET /subjects``), retrying; RegistryUnavailable after ``deadline_s``."""
        end = time.monotonic() + deadline_s
        delay = 0.1
        while True:
            try:
                self._call("GET", "/subjects")
                return
            except RegistryUnavailable as exc:
                if time.monotonic() + delay > end:
                    raise RegistryUnavailable(f"{exc} (gave up after {deadline_s:.0f} s)") from None
                log.warning("%s; retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


def create_topics(settings: KafkaSettings, topics: Iterable[kw.KafkaTopic], timeout: float = 30.0) -> None:
    """Create the topics that do not exist yet, as ts_salobj does: one partition, events compacted."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    wanted = {t.name: t for t in topics}
    if not wanted:
        return
    admin = AdminClient(settings.admin_config())
    end = time.monotonic() + timeout
    while True:
        existing = admin.list_topics(timeout=max(1.0, end - time.monotonic())).topics
        missing = [t for name, t in wanted.items() if name not in existing]
        if not missing:
            return
        if time.monotonic() > end:
            raise TimeoutError(f"Kafka topics not created in {timeout:.0f} s: {', '.join(t.name for t in missing)}")
        new = [
            NewTopic(
                t.name,
                num_partitions=1,
                replication_factor=settings.replication_factor,
                config={"cleanup.policy": "compact"} if t.compacted else {},
            )
            for t in missing
        ]
        for name, future in admin.create_topics(new).items():
            try:
                future.result(timeout=max(1.0, end - time.monotonic()))
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise


def our_schema(topic: kw.KafkaTopic) -> dict[str, Any]:
    return av.avro_schema(topic.component, topic.sal_name)


@dataclass
class _WriteTopic:
    topic: kw.KafkaTopic
    codec: kw.AvroCodec
    rev_code: str
    schema_id: int | None = None
    seq_num: int = 0


class KafkaWriter:
    """Writes SAL samples of a fixed set of topics as one identity (a CSC, a commander, a simulator)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Iterable[kw.KafkaTopic],
        *,
        identity: str,
        origin: int | None = None,
        registry: RegistryClient | None = None,
    ):
        if settings.registry_url is None:
            raise ValueError("Kafka settings name no schema registry (start the embedded bus first)")
        self.settings = settings
        self.identity = identity
        self.origin = os.getpid() if origin is None else origin
        self.registry = registry or RegistryClient(settings.registry_url)
        self._topics: dict[str, _WriteTopic] = {}
        for t in topics:
            codec = kw.AvroCodec(our_schema(t))
            self._topics[t.name] = _WriteTopic(t, codec, kw.rev_code_of(codec))
        self._producer: Any = None
        self.delivered = 0
        self.failed = 0

    def start(self, *, registry_wait_s: float = 30.0, extra_topics: Iterable[kw.KafkaTopic] = ()) -> None:
        """Create the topics (and ``extra_topics``, e.g. those a CSC reads), register our schemas of
        all of them, and open the producer. A registry that does not answer is retried for
        ``registry_wait_s``, then :class:`RegistryUnavailable` says so."""
        from confluent_kafka import Producer

        every = {t.name: t for t in [*(w.topic for w in self._topics.values()), *extra_topics]}
        self.registry.wait(registry_wait_s)
        create_topics(self.settings, every.values())
        for t in every.values():
            self.registry.register(t.subject, our_schema(t))
        self._producer = Producer(with_log(self.settings.producer_config()))

    def topic(self, component: str, sal_name: str) -> kw.KafkaTopic:
        return kw.kafka_topic(self.settings.subname, component, sal_name)

    def _delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            log.error("write to %s not delivered: %s", msg.topic() if msg is not None else "?", err)

    def write(
        self,
        topic: kw.KafkaTopic,
        values: Mapping[str, Any],
        *,
        seq_num: int | None = None,
        snd_stamp: float | None = None,
    ) -> dict[str, Any]:
        """Write one sample; returns the values written (private fields included).

        ``private_seqNum`` counts from 1 per topic, as ts_salobj's writers do, unless ``seq_num`` is
        given (a command's id) or the topic is ackcmd (which carries its command's).
        ``private_sndStamp`` is now (TAI) unless ``snd_stamp`` is given (a simulator's clock); then
        the Kafka record's timestamp is that time too (UTC), so a night played onto Kafka can be
        found again by time (offsets for times), as a real night is.
        """
        if self._producer is None:
            raise RuntimeError("KafkaWriter.start() first")
        wt = self._topics.get(topic.name)
        if wt is None:
            raise KeyError(f"{topic.name} is not one of this writer's topics")
        if wt.schema_id is None:  # look up on first write, never register on write (ts_salobj's way)
            wt.schema_id = self.registry.lookup(topic.subject, wt.codec.schema)
        if seq_num is None and topic.kind != "ackcmd":
            wt.seq_num = wt.seq_num % MAX_SEQ_NUM + 1
            seq_num = wt.seq_num
        data = wt.codec.complete(
            kw.stamp(values, rev_code=wt.rev_code, identity=self.identity, origin=self.origin,
                     snd_stamp=tai_now() if snd_stamp is None else snd_stamp, seq_num=seq_num)
        )  # fmt: skip
        value = kw.encode_value(wt.schema_id, wt.codec, data)
        index = int(data["salIndex"]) if "salIndex" in data else None
        stamp_ms = None if snd_stamp is None else int(round(utc_from_tai(snd_stamp) * 1000))
        self._produce(topic.name, topic.key(index), value, stamp_ms)
        return data

    def _produce(self, name: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        extra = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
        while True:
            try:
                self._producer.produce(name, key=key, value=value, on_delivery=self._delivery, **extra)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def write_raw(self, topic: kw.KafkaTopic, value: bytes, key: bytes | None = None) -> None:
        """Write bytes as they are (for tests and fault injection: records no SAL writer would write)."""
        if self._producer is None:
            raise RuntimeError("KafkaWriter.start() first")
        self._produce(topic.name, topic.key() if key is None else key, value)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for deliveries; returns the number still pending (0 when all are on the broker)."""
        return int(self._producer.flush(timeout)) if self._producer is not None else 0

    def close(self) -> None:
        if self._producer is not None:
            self.flush(10.0)
            self._producer = None


def new_command_id() -> int:
    """A command's ``private_seqNum`` for a commander: random start, as ts_salobj's remotes use."""
    return random.randint(1, MAX_SEQ_NUM)


@dataclass(frozen=True)
class BusSample:
    """One decoded SAL sample read from Kafka, with where it was."""

    topic: kw.KafkaTopic
    partition: int
    offset: int
    key: bytes
    schema_id: int
    data: dict[str, Any]
    #: Kafka's record timestamp (s); the sample's own times are in data (private_sndStamp...).
    kafka_time: float

    @property
    def sal_index(self) -> int:
        return int(self.data.get("salIndex", 0))

    @property
    def snd_stamp(self) -> float:
        return float(self.data.get("private_sndStamp", 0.0))


class KafkaReader:
    """Reads a set of SAL topics in a consumer group; offsets are committed by :meth:`commit`."""

    #: Bad records logged in full per reason before logging only every LOG_EVERY-th.
    LOG_FIRST = 50
    LOG_EVERY = 1000
    #: Questions about newly assigned partitions unanswered for this long are asked again.
    ASK_AGAIN_S = 5.0

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Iterable[kw.KafkaTopic],
        group_id: str,
        *,
        wanted: Mapping[str, Iterable[str]] | None = None,
        registry: RegistryClient | None = None,
        consumer_settings: Mapping[str, Any] | None = None,
        start_at: str = "committed",
    ):
        if settings.registry_url is None:
            raise ValueError("Kafka settings name no schema registry (start the embedded bus first)")
        if start_at not in ("committed", "latest"):
            raise ValueError(f"start_at must be 'committed' or 'latest', not {start_at!r}")
        self.settings = settings
        self.start_at = start_at
        self.topics = {t.name: t for t in topics}
        self.group_id = group_id
        self.wanted = {name: tuple(fields) for name, fields in (wanted or {}).items()}
        self.registry = registry or RegistryClient(settings.registry_url)
        self._extra = dict(consumer_settings or {})
        self._consumer: Any = None
        self._pending: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to commit
        # What lagging() knows beyond the fetcher: the next offset after the last record returned
        # (kept across rebalances), the ends the broker told after an assignment, and the
        # partitions assigned since whose end the broker has not told yet.
        self._read_to: dict[tuple[str, int], int] = {}
        self._told_end: dict[tuple[str, int], int] = {}
        self._unverified: set[tuple[str, int]] = set()
        self._questions: PartitionQuestions | None = None
        self._admin: Any = None
        self.read = 0
        self.bad: collections.Counter[str] = collections.Counter()
        self.consumer_errors = 0
        self.registry_waits = 0

    def start(self, *, create: bool = True, registry_wait_s: float = 30.0) -> None:
        """Join the group and subscribe (creating missing topics first, as ts_salobj does: readers
        do not let the broker create topics).

        ``start_at="committed"``: from the group's committed offsets, else from the earliest record
        (a listener that must not lose telemetry across restarts). ``"latest"``: as a ts_salobj
        reader starts, each event topic from its last sample (the current value, as DDS's
        transient-local gave it) and every other topic from the next record (a commander, a tap).
        """
        from confluent_kafka import Consumer

        self.registry.wait(registry_wait_s)
        if create:
            create_topics(self.settings, self.topics.values())
        conf = self.settings.consumer_config(self.group_id, **{"enable.auto.commit": False, **self._extra})
        self._consumer = Consumer(with_log(conf))
        self._consumer.subscribe(list(self.topics), on_assign=self._assigned)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """A (re)assignment, at start or after a rebalance (the broker gone longer than the session
        timeout): until the fetcher has fetched them, its positions and ends for these partitions
        are unknown or stale, so :meth:`lagging` asks the broker."""
        self._unverified = {(tp.topic, tp.partition) for tp in partitions}
        self._questions = None
        if self.start_at == "latest":
            for tp in partitions:
                low, high = consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
                topic = self.topics.get(tp.topic)
                tp.offset = max(low, high - 1) if topic is not None and topic.kind == "event" and high > low else high
                self._read_to[(tp.topic, tp.partition)] = tp.offset
        consumer.assign(partitions)

    def _bad(self, exc: kw.WireError) -> None:
        self.bad[exc.reason] += 1
        n = self.bad[exc.reason]
        if n <= self.LOG_FIRST or n % self.LOG_EVERY == 0:
            log.warning("bad record skipped (%d so far of this kind): %s", n, exc)

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[BusSample]:
        """The next decoded samples (possibly none); bad records are counted, logged and skipped."""
        if self._consumer is None:
            raise RuntimeError("KafkaReader.start() first")
        # consume() waits for the whole timeout unless max_records arrive: take what is queued, and
        # only when nothing is, wait for the first record (then take what came with it).
        messages = self._consumer.consume(num_messages=max_records, timeout=0)
        if not messages and timeout > 0:
            messages = self._consumer.consume(num_messages=1, timeout=timeout)
            if messages and max_records > 1:
                messages += self._consumer.consume(num_messages=max_records - 1, timeout=0)
        out: list[BusSample] = []
        retry: dict[tuple[str, int], int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                self.consumer_errors += 1
                log.warning("Kafka consumer: %s", err)
                continue
            name, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if (name, partition) in retry:
                continue  # after a registry failure on this partition: read again from there later
            topic = self.topics.get(name) or kw.parse_topic_name(name)
            try:
                schema_id, data = kw.decode_value(
                    msg.value(), self.registry.codec, self.wanted.get(name, ()), topic=name, offset=offset
                )
            except kw.SchemaSourceUnavailable as exc:
                self.registry_waits += 1
                log.warning("%s; %s offset %d will be read again", exc, name, offset)
                retry[(name, partition)] = offset
                continue
            except kw.WireError as exc:
                self._bad(exc)
                self._pending[(name, partition)] = offset + 1
                self._read_to[(name, partition)] = offset + 1
                continue
            self.read += 1
            self._pending[(name, partition)] = offset + 1
            self._read_to[(name, partition)] = offset + 1
            out.append(BusSample(topic, partition, offset, msg.key() or b"", schema_id, data, msg.timestamp()[1] / 1e3))
        if retry:
            from confluent_kafka import TopicPartition

            for (name, partition), offset in retry.items():
                self._consumer.seek(TopicPartition(name, partition, offset))
        return out

    def commit(self) -> None:
        """Commit every record returned (or skipped as bad) so far: a reader restarted in the same
        group starts after them."""
        if self._consumer is None or not self._pending:
            return
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(name, partition, offset) for (name, partition), offset in self._pending.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. during a rebalance: kept, committed with the next ones
            log.warning("offsets not committed yet (%s); they will be with the next commit", exc)
            return
        self._pending.clear()

    def lagging(self) -> dict[tuple[str, int], int | None]:
        """Partitions with records on the broker this reader has not returned yet, with their end
        offsets, as far as the fetcher knows (the high watermarks of its last fetch responses, no
        request to a broker that may be gone). Partitions assigned since the last call are asked of
        the broker (:meth:`verify`): until it answers, they are behind with an end of None."""
        if self._consumer is None:
            return {}
        self.verify()
        assigned = self._consumer.assignment()
        out: dict[tuple[str, int], int | None] = {}
        for tp in self._consumer.position(assigned):
            key = (tp.topic, tp.partition)
            if key in self._unverified:
                out[key] = None
                continue
            at = tp.offset if tp.offset >= 0 else self._read_to.get(key, -1)
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
            high = max(high, self._told_end.get(key, -1))
            if at >= 0 and high >= 0 and at < high:
                out[key] = high
        return out

    def verify(self) -> None:
        """Read the broker's answers about partitions assigned since (their ends and where the
        group resumes them); questions unanswered or failed are asked again ASK_AGAIN_S after they
        were sent. Never waits: done by :meth:`lagging` and by an idle reader."""
        if self._admin is not None:
            self._admin.poll(0)  # serves its log
        if not self._unverified or self._consumer is None:
            return
        q = self._questions
        if q is not None and q.done() and not q.failed:
            try:
                answers = q.answers()
            except Exception as exc:  # noqa: BLE001 (KafkaException, a timeout: asked again)
                q.failed = True
                log.info("partition ends not known yet (%s): asked again in %.0f s", exc, self.ASK_AGAIN_S)
            else:
                self._questions = None
                for key, (end, resume) in answers.items():
                    if key in self._unverified:
                        if resume is not None:
                            self._read_to.setdefault(key, resume)
                        self._told_end[key] = end
                        self._unverified.discard(key)
                return
        if q is None or time.monotonic() - q.sent > self.ASK_AGAIN_S:
            if self._admin is None:
                from confluent_kafka.admin import AdminClient

                self._admin = AdminClient(with_log(self.settings.admin_config()))
            unread = [key for key in self._unverified if key not in self._read_to]
            self._questions = PartitionQuestions.send(self._admin, self.group_id, sorted(self._unverified), unread, self.ASK_AGAIN_S)

    def assignment(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()] if self._consumer else []

    def close(self, commit: bool = True) -> None:
        if self._consumer is None:
            return
        try:
            if commit:
                self.commit()
        finally:
            self._consumer.close()
            self._consumer = None
