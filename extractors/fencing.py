"""Fencing a consumer's writes by its consumer group generation (lua/put.lua ``check_fence``).

A consumer that lost its partitions without hearing of it (stalled past its session timeout, cut off from the
broker, or with a store request held up in the network) may still write the batch in its hands. Written after
the partitions' next owner applied newer events, that batch would put a transaction's first version back over
its correction, for good. Each write carries the group generation the writer holds its partitions in; a replica
set where a newer generation already wrote for one of them refuses it (``Fenced``), and the consumer holds the
batch until a rebalance tells it what happened (its revoke callback then drops the batch).

One exception: a group created anew (its offsets expired, or a new broker cluster) numbers its generations from
1 again, below the fences the old group left. A consumer refused then proves to the broker that its generation
is the current one, by committing offsets no later than what it applied, and takes over exactly the fences it
was refused by (a fence that moved since still refuses it).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from feature_store.records import Fence

log = logging.getLogger(__name__)

# well under the rebalance slack (consumer.REBALANCE_SLACK_S): the revoke callback waits for the write lock
PROOF_TIMEOUT_S = 10.0


class NotCurrentMember(Exception):
    """This consumer cannot show that it holds the batch's partitions in the group's current generation: the
    batch is held (not written) until a rebalance settles it."""


def group_generation(consumer: AIOKafkaConsumer) -> int | None:
    """The group generation this member holds its partitions in, None while it is not a member (aiokafka resets
    it to -1 when the broker answers that the member is unknown or its generation old, and when it leaves).
    aiokafka keeps it on its coordinator, outside its public API; the ingest drills fail (every write raises)
    if a new aiokafka moves it."""
    generation = consumer._coordinator.generation
    return generation if isinstance(generation, int) and generation >= 0 else None


def fence_for(consumer: AIOKafkaConsumer, group_id: str, partitions: set[TopicPartition]) -> Fence:
    """The fence of a write of records from ``partitions``, in the generation held now. NotCurrentMember when
    this member holds no generation or not all of them (they moved: the batch is the next owner's to write)."""
    generation = group_generation(consumer)
    assigned = consumer.assignment()
    if generation is None or not partitions <= assigned:
        raise NotCurrentMember(
            f"not a member of group {group_id} holding {sorted(f'{tp.topic}/{tp.partition}' for tp in partitions)}"
        )
    keys = tuple(sorted(f"{group_id}/{tp.topic}/{tp.partition}" for tp in partitions))
    return Fence(keys, generation)


async def take_over(
    consumer: AIOKafkaConsumer, fence: Fence, records: list[ConsumerRecord], refused: dict[str, int]
) -> Fence:
    """After a refusal by the ``refused`` fences (key -> stored generation): a fence taking exactly those over,
    once the broker accepted a commit from this member in ``fence``'s generation, which it does only from a
    member of the current one. The offsets committed are the committed ones, or where ``records`` start on a
    partition with none (the consumer passes every batch in hand up to the refused one): never past what was
    applied. NotCurrentMember otherwise, or after PROOF_TIMEOUT_S."""
    try:
        await asyncio.wait_for(_prove_current(consumer, fence.generation, records), PROOF_TIMEOUT_S)
    except TimeoutError as exc:
        raise NotCurrentMember(f"no proof of generation {fence.generation} in {PROOF_TIMEOUT_S:.0f} s") from exc
    log.warning(
        "fences of generations newer than the group's current %d (a group created anew) taken over: %s",
        fence.generation,
        refused,
    )
    return Fence(fence.keys, fence.generation, takes_over=tuple(sorted(refused.items())))


async def _prove_current(consumer: AIOKafkaConsumer, generation: int, records: list[ConsumerRecord]) -> None:
    member = _member(consumer)
    starts: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        starts[tp] = min(starts.get(tp, record.offset), record.offset)
    offsets = {}
    for tp, start in starts.items():
        committed = await consumer.committed(tp)
        offsets[tp] = OffsetAndMetadata(committed if committed is not None else start, "")
    _still(consumer, generation, member)
    try:
        await consumer.commit(offsets)
    except Exception as exc:  # an expired member, a rebalance, a coordinator away: nothing is proven
        raise NotCurrentMember(f"the broker refused a commit in generation {generation}: {exc}") from exc
    # aiokafka reads the generation as it sends: one reset meanwhile (an expired session) sends (-1, ""), which
    # a broker accepts for a group with no members left
    _still(consumer, generation, member)


def _member(consumer: AIOKafkaConsumer) -> str:
    return str(consumer._coordinator.member_id)


def _still(consumer: AIOKafkaConsumer, generation: int, member: str) -> None:
    if group_generation(consumer) != generation or _member(consumer) != member:
        raise NotCurrentMember(f"the group generation moved on from {generation}: the batch waits for it")
