"""The proof a consumer gives before it takes over fences (``extractors.fencing.take_over``), against a stand-in
for aiokafka's consumer: the drills in tests/integration/test_ingest_faults.py run the real one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from extractors import fencing
from extractors.fencing import NotCurrentMember, fence_for, take_over
from feature_store.records import Fence

TP = TopicPartition("bank.transactions", 3)


class StandIn:
    """What fencing reads of an AIOKafkaConsumer: the coordinator's generation and member id, the assignment,
    committed offsets and commit. ``on_commit`` runs as the broker answers."""

    def __init__(self, generation: int = 4, committed: int | None = 120) -> None:
        self._coordinator = SimpleNamespace(generation=generation, member_id="m-1")
        self._committed = committed
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.on_commit: Any = None
        self.committed_delay = 0.0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def committed(self, tp: TopicPartition) -> int | None:
        await asyncio.sleep(self.committed_delay)
        return self._committed

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(offsets)
        if self.on_commit is not None:
            self.on_commit()


def _records(*offsets: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(TP.topic, TP.partition, o, 0, 0, None, b"{}", None, 0, 2, ()) for o in offsets
    ]  # fmt: skip


FENCE = Fence(("g/bank.transactions/3",), 4)
REFUSED = {"g/bank.transactions/3": 900}


async def test_a_current_member_takes_over_exactly_the_fences_it_was_refused_by() -> None:
    consumer = StandIn()
    taken = await take_over(consumer, FENCE, _records(130, 131), REFUSED)  # type: ignore[arg-type]
    assert taken == Fence(FENCE.keys, 4, takes_over=(("g/bank.transactions/3", 900),))
    assert consumer.commits == [{TP: OffsetAndMetadata(120, "")}]  # what was committed: no progress claimed


async def test_with_nothing_committed_the_proof_commits_where_the_batch_starts() -> None:
    consumer = StandIn(committed=None)
    await take_over(consumer, FENCE, _records(131, 130), REFUSED)  # type: ignore[arg-type]
    assert consumer.commits == [{TP: OffsetAndMetadata(130, "")}]


async def test_a_member_reset_while_its_commit_was_sent_proves_nothing() -> None:
    """aiokafka reads the generation as it sends: an expired session meanwhile sends (-1, ""), which a broker
    accepts for a group whose members all left. Taken as proof, a stale batch was forced over newer data."""
    consumer = StandIn()

    def expire() -> None:
        consumer._coordinator.generation, consumer._coordinator.member_id = -1, ""

    consumer.on_commit = expire
    with pytest.raises(NotCurrentMember):
        await take_over(consumer, FENCE, _records(130), REFUSED)  # type: ignore[arg-type]


async def test_a_refused_commit_or_a_moved_generation_proves_nothing() -> None:
    consumer = StandIn()

    def refuse() -> None:
        raise RuntimeError("CommitFailedError: the group rebalanced")

    consumer.on_commit = refuse
    with pytest.raises(NotCurrentMember):
        await take_over(consumer, FENCE, _records(130), REFUSED)  # type: ignore[arg-type]
    with pytest.raises(NotCurrentMember):
        await take_over(StandIn(generation=5), FENCE, _records(130), REFUSED)  # type: ignore[arg-type]
    assert consumer.commits  # it was asked, and said no


async def test_the_proof_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """It runs under the write lock the revoke callback waits for: a broker away must not hold a rejoin."""
    monkeypatch.setattr(fencing, "PROOF_TIMEOUT_S", 0.05)
    consumer = StandIn()
    consumer.committed_delay = 5.0
    with pytest.raises(NotCurrentMember):
        await take_over(consumer, FENCE, _records(130), REFUSED)  # type: ignore[arg-type]
    assert not consumer.commits


def test_a_member_without_a_generation_or_the_partitions_writes_nothing() -> None:
    assert fence_for(StandIn(), "g", {TP}) == FENCE  # type: ignore[arg-type]
    with pytest.raises(NotCurrentMember):
        fence_for(StandIn(generation=-1), "g", {TP})  # type: ignore[arg-type]
    with pytest.raises(NotCurrentMember):
        fence_for(StandIn(), "g", {TP, TopicPartition("bank.transactions", 4)})  # type: ignore[arg-type]
