"""Replay windows: validation (pure) and the Kafka offsets that bound a window of *arrival* times."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

# Clocks of producers and brokers differ a little; a window may end this far in the future.
CLOCK_SKEW_S = 60.0


class ReplayWindowError(ValueError):
    """A window that cannot be replayed (end before start, in the future, ...)."""


def validate_window(start_ts: float, end_ts: float, now: float) -> None:
    if end_ts <= start_ts:
        raise ReplayWindowError("the window must end after it starts")
    if start_ts > now + CLOCK_SKEW_S or end_ts > now + CLOCK_SKEW_S:
        raise ReplayWindowError("the window lies in the future: nothing has arrived there yet")


@dataclass(frozen=True)
class PartitionRange:
    partition: TopicPartition
    start: int  # first offset in the window
    end: int  # first offset after the window (exclusive)

    @property
    def size(self) -> int:
        return max(self.end - self.start, 0)


async def offsets_for_window(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    start_ts: float,
    end_ts: float,
) -> list[PartitionRange]:
    """Per partition: the first offset whose record timestamp is >= start and the first one >= end."""
    if not partitions:
        return []
    ends_now = await consumer.end_offsets(list(partitions))
    starts = await consumer.offsets_for_times({tp: int(start_ts * 1000) for tp in partitions})
    # Kafka keeps whole milliseconds: a record that arrived before the end but in its millisecond is inside
    ends = await consumer.offsets_for_times({tp: math.ceil(end_ts * 1000) for tp in partitions})
    ranges = []
    for tp in partitions:
        start_at = starts.get(tp)
        end_at = ends.get(tp)
        start = start_at.offset if start_at is not None else ends_now[tp]
        end = end_at.offset if end_at is not None else ends_now[tp]
        ranges.append(PartitionRange(tp, start, end))
    return ranges
