"""Independent DDS readers of what the Header Service announces (used by hs-demo, hs-bench, tests).

Built only from the SAL interface (protocols.sal types, no project process code), the way the EFD
or the archiver would subscribe: largeFileObjectAvailable of the instance's CSC, and optionally the
camera's endOfImageTelemetry to time the header against the event that closes the image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from protocols import sal


@dataclass
class Arrival:
    sample: Any
    wall: float  # time.time() at reception


class BusWatcher:
    """DDS readers for a few (component, topic) pairs, polled into arrival lists."""

    def __init__(self, domain: int, topics: list[tuple[str, str]]):
        sal.ensure_loopback_dds()
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self.dp = DomainParticipant(domain)
        self.readers = {}
        self.arrivals: dict[tuple[str, str], list[Arrival]] = {}
        for comp, name in topics:
            st = sal.get_topic(comp, name)
            qos = sal.qos_for(st.kind)
            topic = Topic(self.dp, st.dds_name, sal.idl_class(comp, name), qos=qos)
            self.readers[(comp, name)] = DataReader(self.dp, topic, qos=qos)
            self.arrivals[(comp, name)] = []

    def poll(self) -> None:
        for key, reader in self.readers.items():
            for s in reader.take(N=1000):
                info = getattr(s, "sample_info", None)
                if info is not None and not info.valid_data:
                    continue
                self.arrivals[key].append(Arrival(s, time.time()))

    def wait_for(self, key: tuple[str, str], predicate, timeout: float) -> list[Arrival]:  # noqa: ANN001
        """Poll until ``predicate(arrivals)`` is true or the timeout passes; returns the arrivals."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if predicate(self.arrivals[key]) or time.monotonic() > deadline:
                return self.arrivals[key]
            time.sleep(0.02)


class KafkaBusWatcher(BusWatcher):
    """The same watcher on Kafka: a consumer group of its own from each topic's first record, decoded
    with the registry's schemas; samples have the fields as attributes, as DDS samples do."""

    def __init__(self, topics: list[tuple[str, str]], env: dict[str, str] | None = None):
        import os

        from protocols.bus import KafkaSal

        self.bus = KafkaSal.from_env(os.environ if env is None else env)
        self.arrivals = {key: [] for key in topics}
        self._by_name = {}
        for comp, name in topics:
            self._by_name[(comp, sal.get_topic(comp, name).name)] = (comp, name)
        self.reader = self.bus.reader(topics, start_at="committed")
        self.bus.start()

    def poll(self) -> None:
        for s in self.reader.poll(0.0):
            key = self._by_name.get((s.component, s.name.removeprefix("logevent_")))
            if key is not None:
                self.arrivals[key].append(Arrival(s, time.time()))

    def close(self) -> None:
        self.bus.close()
