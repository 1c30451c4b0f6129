"""Recovery from records even the lenient parser cannot read: each becomes a dead letter by coordinates and
the partition moves on; readable records around it are kept (a fake consumer stands in for aiokafka)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.errors import CorruptRecordException
from aiokafka.structs import TopicPartition

from extractors.unreadable import FetchPositions, fetch_around_unreadable

TP0, TP1 = TopicPartition("bank.transactions", 0), TopicPartition("bank.transactions", 1)


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int


class CorruptLog:
    """Partition 0 holds offsets 0..9 with 4 and 5 corrupt; partition 1 holds 0..2. Fetches of a range that
    holds a corrupt offset fail (as a corrupt batch does), single-record reads fail exactly at it."""

    def __init__(self) -> None:
        self.ends = {TP0: 10, TP1: 3}
        self.corrupt = {TP0: {4, 5}, TP1: set()}
        self.position_of = {TP0: 0, TP1: 0}
        self.committed_at = {TP0: 2, TP1: None}

    def assignment(self) -> set[TopicPartition]:
        return {TP0, TP1}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position_of[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.position_of[tp] = 0

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_at[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.position_of[tp]

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int = 1) -> Any:
        out: dict[TopicPartition, list[Rec]] = {}
        for tp in partitions or sorted(self.assignment()):
            start = self.position_of[tp]
            stop = min(start + max_records, self.ends[tp])
            if any(o in self.corrupt[tp] for o in range(start, stop)):
                raise CorruptRecordException(f"Invalid CRC - {tp}")
            if stop > start:
                out[tp] = [Rec(tp.topic, tp.partition, o) for o in range(start, stop)]
                self.position_of[tp] = stop
                max_records -= stop - start
        return out


async def test_corrupt_records_become_dead_letters_and_everything_readable_is_kept() -> None:
    log, positions = CorruptLog(), FetchPositions()
    positions.advance(TP0, 3)  # the pipeline already has 0..2 of partition 0
    readable, unreadable = await fetch_around_unreadable(
        log,
        positions,
        CorruptRecordException("crc"),
        timeout_ms=0,
        max_records=100,  # type: ignore[arg-type]
    )
    assert [r.offset for r in readable[TP0]] == [3, 6, 7, 8, 9]
    assert [r.offset for r in readable[TP1]] == [0, 1, 2]  # never committed: from the beginning
    assert [(u.partition, u.offset) for u in unreadable] == [(TP0, 4), (TP0, 5)]
    letter = unreadable[0].dead_letter()
    assert letter.error_kind == "unreadable" and letter.value is None and "Invalid CRC" in letter.reason
