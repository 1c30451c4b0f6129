"""Records the Kafka client itself cannot read: a header key that is not UTF-8 (librdkafka producers can send
one), a corrupt batch. aiokafka raises while parsing them inside ``getmany``, before our decoder sees
anything, and raises again on every retry: without this module one such record stops a partition for good.

Recovery, when ``getmany`` raises a parse error:

1. Rewind. aiokafka's own positions are not trustworthy after the failure (a ``getmany`` that drained one
   partition and then failed on another has moved the first past records it never returned), so every
   partition goes back to the consumer's own ``FetchPositions``: one past the last record handed on.
2. Read again with a lenient parser (pure Python, header keys decoded with ``surrogateescape``). A bad header
   key is harmless to us, so the record and every other record of its batch are read and processed normally;
   the fast C parser is used again from the next fetch on.
3. Only if even that fails (a corrupt batch), read each partition one record at a time; a record that still
   fails becomes a dead letter by its coordinates (its bytes cannot be read by any parser here; any other
   client can fetch them there), and the partition moves on past it.

Errors that are not about parsing (authorization, a broker gone) are not handled here: they propagate, the
process exits and its supervisor restarts it, loudly.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiokafka.consumer.fetcher as fetcher_module
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import CorruptRecordException, IllegalStateError, UnsupportedCodecError
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.memory_records import _MemoryRecordsPy
from aiokafka.structs import TopicPartition

from extractors.dlq import DeadLetter
from extractors.holding import describe

log = logging.getLogger(__name__)

PARSE_ERRORS = (UnicodeError, struct.error, ValueError, IndexError, CorruptRecordException, UnsupportedCodecError)


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

    async def rewind(self, consumer: AIOKafkaConsumer) -> None:
        """Put every assigned partition back where the pipeline stopped (or at its committed offset)."""
        for tp in consumer.assignment():
            with contextlib.suppress(IllegalStateError):  # revoked by a rebalance meanwhile
                if tp in self._next:
                    consumer.seek(tp, self._next[tp])
                    continue
                committed = await consumer.committed(tp)
                if committed is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)


# ---- a lenient record parser -------------------------------------------------------------------------------
class _LenientBytes(bytearray):
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytearray.decode(self, encoding, "surrogateescape")


class _LenientBuffer(bytearray):
    """Slices decode leniently: the pure-Python parser reads header keys as ``buffer[a:b].decode("utf-8")``."""

    def __getitem__(self, index: Any) -> Any:
        item = bytearray.__getitem__(self, index)
        return _LenientBytes(item) if isinstance(index, slice) else item


class _LenientRecordBatch(_DefaultRecordBatchPy):
    def __init__(self, buffer: bytes | bytearray | memoryview) -> None:
        super().__init__(buffer)
        self._buffer = _LenientBuffer(self._buffer)  # type: ignore[has-type]


class _LenientMemoryRecords(_MemoryRecordsPy):
    def next_batch(self, *args: Any) -> Any:
        raw = self._next_slice
        batch = super().next_batch(*args)
        if batch is not None and raw is not None and raw[self.MAGIC_OFFSET] >= 2:
            return _LenientRecordBatch(raw)
        return batch


@contextlib.contextmanager
def lenient_parsing() -> Iterator[None]:
    """Fetches processed inside use the lenient parser (the consumer's process has one consumer)."""
    original = fetcher_module.MemoryRecords
    fetcher_module.MemoryRecords = _LenientMemoryRecords  # type: ignore[misc]
    try:
        yield
    finally:
        fetcher_module.MemoryRecords = original  # type: ignore[misc]


# ---- recovery -------------------------------------------------------------------------------------------
Fetched = dict[TopicPartition, list[ConsumerRecord]]


async def fetch_around_unreadable(
    consumer: AIOKafkaConsumer,
    positions: FetchPositions,
    failure: BaseException,
    *,
    timeout_ms: int,
    max_records: int,
) -> tuple[Fetched, list[UnreadableRecord]]:
    """After ``getmany`` raised a parse error: the records from where the pipeline stopped, read leniently,
    and the records that cannot be read at all."""
    log.warning("a fetched record cannot be parsed (%s): reading again with the lenient parser", describe(failure))
    await positions.rewind(consumer)
    with lenient_parsing():
        try:
            return await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records), []
        except PARSE_ERRORS as exc:
            log.warning("the lenient parser failed too (%s): reading one record at a time", describe(exc))
        await positions.rewind(consumer)
        return await _one_record_at_a_time(consumer, timeout_ms, max_records)


async def _one_record_at_a_time(
    consumer: AIOKafkaConsumer, timeout_ms: int, max_records: int
) -> tuple[Fetched, list[UnreadableRecord]]:
    readable: Fetched = {}
    unreadable: list[UnreadableRecord] = []
    budget = max_records
    for tp in sorted(consumer.assignment()):
        while budget > 0:
            budget -= 1
            try:
                got = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
            except PARSE_ERRORS as exc:  # this partition's next record is the one
                try:
                    offset = await consumer.position(tp)
                except IllegalStateError:
                    break
                unreadable.append(UnreadableRecord(tp, offset, describe(exc)))
                log.warning("record %s/%s@%s cannot be read: %s", tp.topic, tp.partition, offset, describe(exc))
                consumer.seek(tp, offset + 1)
                continue
            if not got:
                break
            readable.setdefault(tp, []).extend(got.get(tp, []))
    return readable, unreadable
