"""Plays a planned night onto the DDS bus with a simulated clock.

One DomainParticipant; one DataWriter per (component, topic) with the SAL QoS of its kind
(:func:`protocols.sal.qos_for`) on the DDS topic :attr:`SalTopic.dds_name` with the type
:func:`protocols.sal.idl_class`. Each :class:`~tools.sim.night.Emission` becomes one sample whose
``private_sndStamp`` is the simulated TAI time, and whose DDS source timestamp is that time too
(as UTC nanoseconds, TAI - 37 s), so a reader sees the night as if it were happening.

Clock: ``speed`` 1 is real time, N is N times faster, 0 as fast as possible. Waits are computed
from one wall-clock anchor, so sleeping never accumulates drift.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any, Callable, Iterable, TextIO

from protocols.sal import ensure_loopback_dds, get_topic, idl_class, make_sample, qos_for
from protocols.timescale import utc_from_tai
from tools.sim.night import Emission, emission_key
from tools.sim.scenario import tai_iso

__all__ = ["Player", "build_sample"]


# make_sample's own parameter names; a SAL field with one of these names is set after construction.
_RESERVED = frozenset({"component", "name", "sal_index"})


def build_sample(component: str, topic: str, sal_index: int, fields: dict[str, Any], **private: Any) -> Any:
    """A DDS sample of a SAL topic from a fields dict (via :func:`protocols.sal.make_sample`)."""
    plain = {k: v for k, v in fields.items() if k not in _RESERVED}
    sample = make_sample(component, topic, sal_index, **private, **plain)
    for k in fields.keys() & _RESERVED:
        if k not in get_topic(component, topic).field_map():
            raise ValueError(f"{component}.{topic} has no field {k}")
        setattr(sample, k, fields[k])
    return sample


class Player:
    """Writes emissions to one DDS domain.

    Parameters
    ----------
    domain_id : int
        DDS domain; Cyclone DDS is confined to loopback (``ensure_loopback_dds``).
    log : text stream
        Where progress goes (default stderr).
    """

    def __init__(self, domain_id: int, log: TextIO | None = None):
        ensure_loopback_dds()
        from cyclonedds.domain import DomainParticipant

        self.domain_id = domain_id
        self.log = log if log is not None else sys.stderr
        self.participant: Any = DomainParticipant(domain_id)
        self._writers: dict[tuple[str, str], Any] = {}
        self._topics: dict[tuple[str, str], Any] = {}
        self._seq: dict[tuple[str, str], int] = {}
        self.counts: Counter = Counter()

    # -- writers ---------------------------------------------------------------------------------
    def writer(self, component: str, topic: str) -> Any:
        """The DataWriter of a topic, created on first use."""
        key = (component, topic)
        w = self._writers.get(key)
        if w is None:
            from cyclonedds.pub import DataWriter
            from cyclonedds.topic import Topic

            sal = get_topic(component, topic)
            qos = qos_for(sal.kind)
            t = Topic(self.participant, sal.dds_name, idl_class(component, topic), qos=qos)
            w = DataWriter(self.participant, t, qos=qos)
            self._topics[key] = t
            self._writers[key] = w
        return w

    @property
    def n_writers(self) -> int:
        return len(self._writers)

    def prepare(self, emissions: Iterable[Emission]) -> None:
        """Create the writers of every (component, topic) that will be written."""
        for comp, topic in sorted({(e.component, e.topic) for e in emissions}):
            self.writer(comp, topic)

    def prepare_topics(self, topics: Iterable[tuple[str, str]]) -> None:
        for comp, topic in sorted(set(topics)):
            self.writer(comp, topic)

    def wait_for_readers(self, timeout: float, settle: float = 0.5) -> int:
        """Give DDS discovery up to ``timeout`` seconds to match our writers with readers.

        Returns early when every writer has a reader, or when some have and the number of matches
        has not changed for ``settle`` seconds. Returns the number of writers with a reader.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        last = -1
        stable_since = time.monotonic()
        matched = 0
        while True:
            matched = sum(1 for w in self._writers.values() if w.get_publication_matched_status().current_count > 0)
            now = time.monotonic()
            if matched != last:
                last, stable_since = matched, now
            if self._writers and matched == len(self._writers):
                break
            if matched > 0 and now - stable_since >= settle:
                break
            if now >= deadline:
                break
            time.sleep(0.05)
        return matched

    # -- writing ---------------------------------------------------------------------------------
    def write(self, e: Emission) -> None:
        key = (e.component, e.topic)
        w = self.writer(*key)
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        sample = build_sample(
            e.component,
            e.topic,
            e.sal_index,
            e.fields,
            private_sndStamp=e.tai,
            private_seqNum=seq,
            private_identity=e.component,
            private_origin=os.getpid(),
        )
        w.write(sample, timestamp=int(round(utc_from_tai(e.tai) * 1e9)))
        self.counts[emission_key(e)] += 1

    def play(
        self,
        emissions: Iterable[Emission],
        speed: float = 1.0,
        *,
        total_exposures: int | None = None,
        camera: str | None = None,
        anchor_tai: float | None = None,
        on_exposure: Callable[[Emission], None] | None = None,
    ) -> Counter:
        """Write the emissions in order, sleeping so that simulated time runs ``speed`` x real time.

        Parameters
        ----------
        speed : float
            1 real time, N N-times faster, 0 as fast as possible.
        total_exposures : int, optional
            For the progress lines ("exposure 3/10 ...").
        camera : str, optional
            Camera component whose startIntegration marks an exposure (default: any startIntegration).
        anchor_tai : float, optional
            Simulated time that corresponds to "now" when play starts (default: the first emission's
            time). Give the current TAI to play a night scheduled around now in true time.

        Returns
        -------
        collections.Counter
            Samples written per ``Component[:salIndex].topic``.
        """
        if speed < 0:
            raise ValueError("speed must be >= 0")
        wall0: float | None = None
        sim0 = anchor_tai
        n_exp = 0
        for e in emissions:
            if speed > 0:
                if wall0 is None:
                    wall0 = time.monotonic()
                    if sim0 is None:
                        sim0 = e.tai
                delay = wall0 + (e.tai - sim0) / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.write(e)
            if e.topic == "startIntegration" and (camera is None or e.component == camera):
                n_exp += 1
                of = f"/{total_exposures}" if total_exposures else ""
                print(
                    f"hs-sim: exposure {n_exp}{of} {e.fields.get('imageName', '?')} start {tai_iso(e.tai)} TAI "
                    f"exptime {e.fields.get('exposureTime', 0.0):g} s",
                    file=self.log,
                    flush=True,
                )
                if on_exposure is not None:
                    on_exposure(e)
        return self.counts

    def linger(self, seconds: float = 1.0) -> None:
        """Keep the participant alive so reliable and transient-local samples reach their readers."""
        from cyclonedds.util import duration

        deadline = time.monotonic() + max(seconds, 0.0)
        for w in self._writers.values():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                w.wait_for_acks(duration(seconds=left))
            except Exception:  # noqa: BLE001 - best effort; the sleep below still applies
                pass
        left = deadline - time.monotonic()
        if left > 0:
            time.sleep(left)

    def summary(self) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"hs-sim: wrote {total} samples on domain {self.domain_id}: {parts}"

    def close(self) -> None:
        """Drop the writers, topics and participant (Cyclone deletes entities when collected)."""
        self._writers.clear()
        self._topics.clear()
        self.participant = None

    def __enter__(self) -> "Player":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class KafkaPlayer(Player):
    """Writes emissions to SAL on Kafka (ts_salobj 8's wire), one writer identity per component.

    Each sample's ``private_sndStamp`` (and ``private_efdStamp``/``private_kafkaStamp``) is the
    simulated time, as DDS's source timestamp is in :class:`Player`. Settings from ts_salobj's
    environment variables (:mod:`protocols.kafka_config`)."""

    def __init__(self, log: TextIO | None = None, env: dict[str, str] | None = None):
        from protocols.bus import KafkaSal

        self.domain_id = "kafka"
        self.log = log if log is not None else sys.stderr
        self.bus = KafkaSal.from_env(os.environ if env is None else env)
        self.participant = None
        self._writers: dict[tuple[str, str], Any] = {}
        self._topics: dict[tuple[str, str], Any] = {}
        self._seq: dict[tuple[str, str], int] = {}
        self.counts = Counter()

    def writer(self, component: str, topic: str) -> Any:
        key = (component, topic)
        w = self._writers.get(key)
        if w is None:
            w = self._writers[key] = self.bus.writer(component, topic, identity=component)
        return w

    def prepare_topics(self, topics: Iterable[tuple[str, str]]) -> None:
        """Declare every writer, then create the topics and register the schemas at once."""
        for comp, topic in sorted(set(topics)):
            self.writer(comp, topic)
        self.bus.start()

    def prepare(self, emissions: Iterable[Emission]) -> None:
        self.prepare_topics((e.component, e.topic) for e in emissions)

    def wait_for_readers(self, timeout: float, settle: float = 0.5) -> int:
        """A Kafka log keeps what is written for readers that come later: nothing to wait for."""
        return len(self._writers)

    def write(self, e: Emission) -> None:
        if not self.bus.started:
            self.bus.start()
        self.writer(e.component, e.topic).write(e.fields, e.sal_index, snd_stamp=e.tai)
        self.counts[emission_key(e)] += 1

    def linger(self, seconds: float = 1.0) -> None:
        self.bus.flush(max(seconds, 5.0))

    def summary(self) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"hs-sim: wrote {total} samples on Kafka: {parts}"

    def close(self) -> None:
        self.bus.close()
        self._writers.clear()
