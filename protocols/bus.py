"""One SAL bus interface, two transports: Cyclone DDS (the embedded default) and Kafka (ts_salobj 8).

An instance chooses with ``bus: dds|kafka`` in ``instance.yaml`` (``HS_BUS`` overrides). A process
opens :func:`open_bus`, declares its writers (:meth:`Bus.writer`) and readers (:meth:`Bus.reader`),
calls :meth:`Bus.start` once, then writes plain values::

    bus = open_bus(cfg)
    lfo = bus.writer(cfg.csc, "largeFileObjectAvailable", identity=cfg.csc)
    bus.start()
    lfo.write({"url": ..., "id": ...})

Samples read come back as :class:`Sample` (component, SAL name, every field as a dict). DDS keeps
its own fast paths where they matter (the listener takes serialized samples itself); this module is
for the processes that write or read a few topics: CSC, publisher, simulator, commander.

On Kafka, connection settings are ts_salobj's environment variables
(:mod:`protocols.kafka_config`); :meth:`Bus.start` waits for the schema registry, creates the topics
and registers our schemas, and raises :class:`BusUnavailable` with the reason if it cannot.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol

from protocols import sal
from protocols.envelope import tai_now
from protocols.timescale import utc_from_tai

KINDS = ("dds", "kafka")


class BusUnavailable(RuntimeError):
    """The bus cannot be used now (registry or broker unreachable, no settings); the reason says why."""


@dataclass(frozen=True)
class Sample:
    """One SAL sample read from a bus."""

    component: str
    name: str
    data: dict[str, Any]  # every field, salIndex and the private ones included
    where: str = ""  # Kafka: "topic@offset"

    @property
    def sal_index(self) -> int:
        return int(self.data.get("salIndex", 0))

    def __getattr__(self, field: str) -> Any:  # sample.private_seqNum, as on a DDS sample
        try:
            return self.__dict__["data"][field]
        except KeyError:
            raise AttributeError(field) from None


class Writer(Protocol):
    def write(
        self,
        values: Mapping[str, Any],
        sal_index: int = 0,
        seq_num: int | None = None,
        snd_stamp: float | None = None,
    ) -> Any: ...


class Reader(Protocol):
    def poll(self, timeout: float = 0.0) -> list[Sample]: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...


class Bus(Protocol):
    kind: str

    def writer(self, component: str, name: str, identity: str) -> Writer: ...

    def reader(self, topics: Iterable[tuple[str, str]], group: str | None = None, start_at: str = "committed") -> Reader: ...

    def start(self, registry_wait_s: float = 30.0) -> None: ...

    def flush(self, timeout: float = 5.0) -> None: ...

    def close(self) -> None: ...


def open_bus(cfg: Any, env: Mapping[str, str] | None = None) -> Bus:
    """The bus of an instance (``cfg.bus``), DDS on ``cfg.dds_domain`` or Kafka from ``env``."""
    if getattr(cfg, "bus", "dds") == "kafka":
        return KafkaSal.from_env(os.environ if env is None else env)
    return DdsSal(cfg.dds_domain)


# --------------------------------------------------------------------------------------------------
# DDS
# --------------------------------------------------------------------------------------------------


class _DdsWriter:
    def __init__(self, bus: DdsSal, component: str, name: str, identity: str):
        from cyclonedds.pub import DataWriter

        self.component, self.name, self.identity = component, name, identity
        topic, qos = bus.topic(component, name)
        self.dds = DataWriter(bus.dp, topic, qos=qos)
        self.seq = 0
        self.origin = os.getpid()

    def write(self, values: Mapping[str, Any], sal_index: int = 0, seq_num: int | None = None, snd_stamp: float | None = None) -> Any:
        if seq_num is None:
            self.seq += 1
            seq_num = self.seq
        snd = tai_now() if snd_stamp is None else snd_stamp
        fields = dict(values)
        fields.setdefault("private_identity", self.identity)
        fields.setdefault("private_origin", self.origin)
        sample = sal.make_sample(self.component, self.name, sal_index, private_sndStamp=snd, private_seqNum=seq_num, **fields)
        if snd_stamp is None:
            self.dds.write(sample)
        else:  # a simulator's clock: the DDS source time is the sample's own (UTC ns)
            self.dds.write(sample, timestamp=int(round(utc_from_tai(snd_stamp) * 1e9)))
        return sample


class _DdsReader:
    def __init__(self, bus: DdsSal, topics: Iterable[tuple[str, str]]):
        from cyclonedds.sub import DataReader

        self.readers = []
        for component, name in topics:
            topic, qos = bus.topic(component, name)
            self.readers.append((component, name, DataReader(bus.dp, topic, qos=qos)))

    def poll(self, timeout: float = 0.0) -> list[Sample]:
        out: list[Sample] = []
        for component, name, reader in self.readers:
            for s in reader.take(N=64):
                info = getattr(s, "sample_info", None)
                if info is not None and not info.valid_data:
                    continue
                out.append(Sample(component, name, sal.sample_to_dict(s)))
        if not out and timeout > 0:
            time.sleep(min(timeout, 0.01))
        return out

    def wait_assigned(self, timeout: float) -> None:
        """DDS readers match writers by themselves."""

    def commit(self) -> None:
        """DDS has no log to resume from."""

    def close(self) -> None:
        self.readers.clear()


class DdsSal:
    """SAL on Cyclone DDS (loopback), one participant."""

    kind = "dds"

    def __init__(self, domain: int):
        sal.ensure_loopback_dds()
        from cyclonedds.domain import DomainParticipant

        self.domain = domain
        self.dp = DomainParticipant(domain)
        self._topics: dict[tuple[str, str], Any] = {}
        self.writers: list[_DdsWriter] = []

    def topic(self, component: str, name: str) -> tuple[Any, Any]:
        from cyclonedds.topic import Topic

        st = sal.get_topic(component, name)
        qos = sal.qos_for(st.kind)
        t = self._topics.get((component, name))
        if t is None:
            t = self._topics[(component, name)] = Topic(self.dp, st.dds_name, sal.idl_class(component, name), qos=qos)
        return t, qos

    def writer(self, component: str, name: str, identity: str) -> _DdsWriter:
        w = _DdsWriter(self, component, name, identity)
        self.writers.append(w)
        return w

    def reader(self, topics: Iterable[tuple[str, str]], group: str | None = None, start_at: str = "committed") -> _DdsReader:
        return _DdsReader(self, topics)

    def start(self, registry_wait_s: float = 30.0) -> None:
        """Nothing to wait for: DDS discovery runs by itself."""

    def flush(self, timeout: float = 5.0) -> None:
        from cyclonedds.util import duration

        for w in self.writers:
            try:
                w.dds.wait_for_acks(duration(seconds=timeout))
            except Exception:  # noqa: BLE001 (best effort: a reader that went away)
                pass

    def close(self) -> None:
        self.writers.clear()
        self._topics.clear()


# --------------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------------


class _KafkaWriter:
    def __init__(self, bus: KafkaSal, component: str, name: str, identity: str):
        from protocols import kafka_wire as kw

        self.bus, self.identity = bus, identity
        self.topic = kw.kafka_topic(bus.settings.subname, component, _sal_name(component, name))

    def write(self, values: Mapping[str, Any], sal_index: int = 0, seq_num: int | None = None, snd_stamp: float | None = None) -> Any:
        writer = self.bus.writer_of(self.identity, self.topic)
        data = dict(values)
        if "salIndex" in writer._topics[self.topic.name].codec.fields:
            data["salIndex"] = sal_index
        return writer.write(self.topic, data, seq_num=seq_num, snd_stamp=snd_stamp)


class _KafkaReader:
    def __init__(self, reader: Any):
        self.kafka = reader
        self._early: list[Sample] = []

    def poll(self, timeout: float = 0.0) -> list[Sample]:
        got = self.kafka.poll(timeout=timeout)
        out = [Sample(s.topic.component, _short_name(s.topic.component, s.topic.sal_name), s.data, f"{s.topic.name}@{s.offset}") for s in got]
        if self._early:
            out, self._early = self._early + out, []
        return out

    def wait_assigned(self, timeout: float) -> None:
        """Until the group has given this reader its partitions (a record written after this
        returns is read); TimeoutError after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while not self.kafka.assignment():
            if time.monotonic() > end:
                raise TimeoutError(f"Kafka consumer group {self.kafka.group_id}: no partitions assigned in {timeout:.0f} s")
            self._early += self.poll(0.1)

    def commit(self) -> None:
        self.kafka.commit()

    def close(self) -> None:
        self.kafka.close()


def _sal_name(component: str, name: str) -> str:
    """Kafka's SAL name (``logevent_x``, ``command_x``, ``ackcmd``, telemetry ``x``) of our topic name."""
    st = sal.get_topic(component, name)
    if st.kind == "event":
        return f"logevent_{st.name}"
    if st.kind == "command":
        return f"command_{st.name}"
    return st.name


def _short_name(component: str, sal_name: str) -> str:
    """Our topic name (as ``sal.get_topic`` takes it) of a Kafka SAL name."""
    for prefix in ("logevent_", "command_"):
        if sal_name.startswith(prefix):
            short = sal_name[len(prefix) :]
            try:
                sal.get_topic(component, short)
                return short
            except sal.UnknownTopicError:
                return sal_name
    return sal_name


class KafkaSal:
    """SAL on Kafka as ts_salobj 8 speaks it: one :class:`~protocols.kafka_bus.KafkaWriter` per
    identity for every topic it writes, :class:`~protocols.kafka_bus.KafkaReader` for reading."""

    kind = "kafka"

    def __init__(self, settings: Any):
        from protocols.kafka_bus import RegistryClient

        if settings.registry_url is None:
            raise BusUnavailable(
                "bus: kafka but LSST_KAFKA_BROKER_ADDR and LSST_SCHEMA_REGISTRY_URL are not set "
                "(hs-demo and the tests start an embedded bus: python -m tools.kafka_local)"
            )
        self.settings = settings
        self.registry = RegistryClient(settings.registry_url)
        self._declared: dict[str, list[Any]] = {}  # identity -> topics
        self._writers: dict[str, Any] = {}  # identity -> KafkaWriter
        self._readers: list[tuple[Any, Any]] = []
        self.started = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSal:
        from protocols.kafka_config import KafkaConfigError, settings_from_env

        try:
            return cls(settings_from_env(env, default_subname="sal"))
        except KafkaConfigError as exc:
            raise BusUnavailable(f"Kafka settings: {exc}") from None

    def writer(self, component: str, name: str, identity: str) -> _KafkaWriter:
        w = _KafkaWriter(self, component, name, identity)
        topics = self._declared.setdefault(identity, [])
        if w.topic not in topics:
            topics.append(w.topic)
        if self.started and identity in self._writers and w.topic.name not in self._writers[identity]._topics:
            self._start_writer(identity, 30.0)  # declared late: a writer of its own with every topic
        return w

    def writer_of(self, identity: str, topic: Any) -> Any:
        if not self.started:
            raise RuntimeError("Bus.start() first")
        w = self._writers.get(identity)
        if w is None:
            w = self._start_writer(identity, 30.0)
        return w

    def _start_writer(self, identity: str, wait: float) -> Any:
        from protocols.kafka_bus import KafkaWriter

        w = KafkaWriter(self.settings, self._declared[identity], identity=identity, registry=self.registry)
        w.start(registry_wait_s=wait)
        old = self._writers.get(identity)
        self._writers[identity] = w
        if old is not None:
            old.close()
        return w

    def reader(self, topics: Iterable[tuple[str, str]], group: str | None = None, start_at: str = "committed") -> _KafkaReader:
        from protocols import kafka_wire as kw
        from protocols.kafka_bus import KafkaReader

        ktopics = [kw.kafka_topic(self.settings.subname, c, _sal_name(c, n)) for c, n in topics]
        group = group or f"hs-{os.getpid()}-{time.time_ns()}"
        kr = KafkaReader(self.settings, ktopics, group, registry=self.registry, start_at=start_at)
        self._readers.append((kr, ktopics))
        if self.started:
            kr.start(registry_wait_s=30.0)
        return _KafkaReader(kr)

    def start(self, registry_wait_s: float = 30.0) -> None:
        """Wait for the registry (up to ``registry_wait_s``), create the topics, register the schemas,
        open producers and consumers. :class:`BusUnavailable` says why it could not."""
        from protocols.kafka_bus import RegistryRefused, RegistryUnavailable

        if self.started:
            return
        try:
            self.registry.wait(registry_wait_s)
            for identity in self._declared:
                if identity not in self._writers:
                    self._start_writer(identity, registry_wait_s)
            for kr, _ in self._readers:
                if kr._consumer is None:
                    kr.start(registry_wait_s=registry_wait_s)
        except (RegistryUnavailable, RegistryRefused, TimeoutError) as exc:
            raise BusUnavailable(f"Kafka bus not usable: {exc}") from None
        except Exception as exc:  # noqa: BLE001 (librdkafka's errors: the reason is what matters)
            if type(exc).__name__ in ("KafkaException", "KafkaError"):
                raise BusUnavailable(f"Kafka bus not usable: {exc}") from None
            raise
        self.started = True

    def flush(self, timeout: float = 5.0) -> None:
        self.flush_pending(timeout)

    def flush_pending(self, timeout: float = 5.0) -> int:
        """Wait for the broker to take every record written; the number still pending after ``timeout``."""
        return sum(w.flush(timeout) for w in self._writers.values())

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        for kr, _ in self._readers:
            kr.close()
        self._readers.clear()
