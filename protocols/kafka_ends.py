"""Where a consumer group's newly assigned partitions end, and where it resumes them, asked of the
broker without waiting for the answer.

Right after an assignment (at start, or after the broker was gone longer than the session timeout)
a consumer's fetcher knows neither its positions nor the partitions' ends, or only ends from before
an outage. The questions go through an admin client, on connections of its own: on the consumer's
connection they would wait behind its long-polling fetch requests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

Partition = tuple[str, int]  # (topic, partition)


@dataclass
class PartitionQuestions:
    """One round of questions: each partition's end and, for those the reader has not read from
    yet, the group's committed offset and the partition's first offset (where the group resumes
    when nothing is committed)."""

    latest: dict[Any, Any]
    earliest: dict[Any, Any]
    committed: list[Any]
    sent: float
    failed: bool = False  # an answer was an error: asked again once ASK_AGAIN_S have passed

    @classmethod
    def send(cls, admin: Any, group_id: str, partitions: Iterable[Partition], unread: Iterable[Partition], timeout_s: float) -> PartitionQuestions:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in partitions]
        first = [TopicPartition(t, p) for t, p in unread]
        latest = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=timeout_s)
        earliest = admin.list_offsets({tp: OffsetSpec.earliest() for tp in first}, request_timeout=timeout_s) if first else {}
        committed = (
            list(admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id, first)], request_timeout=timeout_s).values())
            if first
            else []
        )
        return cls(latest, earliest, committed, time.monotonic())

    def done(self) -> bool:
        return all(f.done() for f in (*self.latest.values(), *self.earliest.values(), *self.committed))

    def answers(self) -> dict[Partition, tuple[int, int | None]]:
        """(end, where the group resumes or None if the reader has read from it) per partition.
        Raises the broker's error (KafkaException) if a question was not answered."""
        resume: dict[Partition, int] = {(tp.topic, tp.partition): f.result().offset for tp, f in self.earliest.items()}
        for f in self.committed:
            for tp in f.result().topic_partitions:
                if tp.offset >= 0:
                    resume[(tp.topic, tp.partition)] = tp.offset
        return {(tp.topic, tp.partition): (f.result().offset, resume.get((tp.topic, tp.partition))) for tp, f in self.latest.items()}
