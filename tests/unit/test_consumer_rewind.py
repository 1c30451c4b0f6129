"""The consumer's re-read from the committed offsets after a fetch that straddled a revocation
(``ExtractorConsumer._rewind_to_committed``), against a stand-in for aiokafka's consumer that enforces what the
real one does: seeking a partition not assigned raises."""

from __future__ import annotations

from typing import Any, cast

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from deploy.settings import load_settings
from extractors.consumer import ExtractorConsumer
from feature_store.fake import InMemoryFeatureStore

MINE, MOVING = TopicPartition("bank.transactions", 0), TopicPartition("bank.applications", 3)


class RebalancingConsumer:
    """Loses ``MOVING`` to another member while the committed offset of the first partition is asked for."""

    def __init__(self) -> None:
        self.assigned = {MINE, MOVING}
        self.positions: dict[TopicPartition, int | str] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def committed(self, tp: TopicPartition) -> int | None:
        self.assigned.discard(MOVING)  # a rebalance lands during the request
        return 40 if tp == MINE else None

    def _check(self, tp: TopicPartition) -> None:
        if tp not in self.assigned:
            raise IllegalStateError(f"Partitions {{{tp}}} are not assigned")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check(tp)
        self.positions[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self._check(tp)
        self.positions[tp] = "beginning"


async def test_a_partition_that_moves_away_during_the_rewind_is_skipped_not_fatal() -> None:
    """Seen in a demo: the seek raised IllegalStateError and the consumer process died (the supervisor
    restarted it; `rtrec status` showed the restart)."""
    consumer = ExtractorConsumer(load_settings(), cast(Any, InMemoryFeatureStore()))
    stand_in = RebalancingConsumer()
    consumer._consumer = cast(Any, stand_in)
    for _ in range(2):  # whichever partition is asked first
        stand_in.assigned = {MINE, MOVING}
        await consumer._rewind_to_committed()
        assert stand_in.positions == {MINE: 40}
