"""Records the Kafka client itself cannot read: a header key that is not UTF-8 (librdkafka producers can
send one), a corrupt batch, an unknown compression codec. aiokafka raises while parsing them inside
``getmany``, before our decoder sees anything, and raises again on every retry: without this module one such
record stops a partition for good.

After such a failure the positions aiokafka keeps are not trustworthy either: a ``getmany`` that drained one
partition and then failed on another has already moved the first partition past records it never returned.
So the consumer keeps its own ``FetchPositions`` (the next offset the pipeline expects per partition), rewinds
every partition to it, and reads one record at a time per partition until the unreadable one fails on its
own. That record becomes a dead letter with its coordinates (its bytes cannot be read by this client; any
other client can fetch them there) and the partition moves on past it. Nothing readable is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import TopicPartition

from extractors.dlq import DeadLetter
from extractors.holding import describe

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    partition: TopicPartition
    offset: int
    reason: str

    def dead_letter(self) -> DeadLetter:
        return DeadLetter(
            topic=self.partition.topic,
            partition=self.partition.partition,
            offset=self.offset,
            key=None,
            value=None,
            headers=(),
            reason=f"the Kafka client cannot read this record ({self.reason}); fetch it by its coordinates",
            error_kind="unreadable",
        )


class FetchPositions:
    """The next offset the pipeline expects per partition: one past the last record it was handed."""

    def __init__(self) -> None:
        self._next: dict[TopicPartition, int] = {}

    def advance(self, partition: TopicPartition, next_offset: int) -> None:
        self._next[partition] = max(next_offset, self._next.get(partition, 0))

    def forget(self) -> None:
        """After a rebalance aiokafka restarts every partition from its committed offset."""
        self._next.clear()

    async def rewind(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Put every partition back where the pipeline stopped (or at its committed offset)."""
        for tp in partitions:
            if tp in self._next:
                consumer.seek(tp, self._next[tp])
                continue
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)


async def fetch_around_unreadable(
    consumer: AIOKafkaConsumer,
    positions: FetchPositions,
    failure: BaseException,
    *,
    timeout_ms: int,
    max_records: int,
) -> tuple[dict[TopicPartition, list[ConsumerRecord]], list[UnreadableRecord]]:
    """After ``getmany`` raised ``failure``: the readable records up to ``max_records`` and the unreadable ones
    found, each partition rewound first and read one record at a time."""
    log.warning("a fetched record cannot be read (%s): reading partitions one record at a time", describe(failure))
    assigned = set(consumer.assignment())
    await positions.rewind(consumer, assigned)
    readable: dict[TopicPartition, list[ConsumerRecord]] = {}
    unreadable: list[UnreadableRecord] = []
    budget = max_records
    for tp in sorted(assigned):
        while budget > 0:
            try:
                got = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
            except Exception as exc:  # this partition's next record is the one
                offset = await consumer.position(tp)
                unreadable.append(UnreadableRecord(tp, offset, describe(exc)))
                log.warning("record %s/%s@%s cannot be read: %s", tp.topic, tp.partition, offset, describe(exc))
                consumer.seek(tp, offset + 1)
                break
            if not got:
                break
            readable.setdefault(tp, []).extend(got.get(tp, []))
            budget -= 1
    return readable, unreadable
