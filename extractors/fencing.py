"""Fencing a consumer's writes by its consumer group generation (lua/put.lua ``check_fence``).

A consumer that lost its partitions without hearing of it (stalled past its session timeout, cut off from the
broker, or with a store request held up in the network) may still write the batch in its hands. Written after
the partitions' next owner applied newer events, that batch would put a transaction's first version back over
its correction, for good. Each write carries the group generation the writer holds its partitions in; a replica
set where a newer generation already wrote for one of them refuses it (``Fenced``), and the consumer holds the
batch until a rebalance tells it what happened (its revoke callback then drops the batch).

One exception: a group created anew (its offsets expired, or a new broker cluster) numbers its generations from
1 again, below the fences the old group left. A consumer refused then proves to the broker that its generation
is the current one, by committing offsets no later than what it applied, and takes the fence over (``force``).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from feature_store.records import Fence

log = logging.getLogger(__name__)

PROOF_TIMEOUT_S = 30.0


class NotCurrentMember(Exception):
    """This consumer cannot show that it holds the batch's partitions in the group's current generation: the
    batch is held (not written) until a rebalance settles it."""


def group_generation(consumer: AIOKafkaConsumer) -> int | None:
    """The group generation this member holds its partitions in, None while it is not a member (after its
    session expired: aiokafka resets it to -1). aiokafka keeps it on its coordinator, outside its public API;
    the ingest drills fail (every write raises) if a new aiokafka moves it."""
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


async def take_over(consumer: AIOKafkaConsumer, fence: Fence, records: list[ConsumerRecord]) -> Fence:
    """After a refusal: the fence forced, once the broker accepted a commit in ``fence``'s generation (which it
    does only from a member of the current one). The offsets committed are the committed ones, or where the
    batch starts on a partition with none: never past what was applied. NotCurrentMember otherwise."""
    if group_generation(consumer) != fence.generation:
        raise NotCurrentMember(f"the group generation moved on from {fence.generation}: the batch waits for it")
    starts: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        starts[tp] = min(starts.get(tp, record.offset), record.offset)
    offsets = {}
    for tp, start in starts.items():
        committed = await consumer.committed(tp)
        offsets[tp] = OffsetAndMetadata(committed if committed is not None else start, "")
    try:
        await asyncio.wait_for(consumer.commit(offsets), PROOF_TIMEOUT_S)
    except Exception as exc:  # an expired member, a rebalance, a coordinator away: nothing is proven
        raise NotCurrentMember(f"the broker refused a commit in generation {fence.generation}: {exc}") from exc
    log.warning(
        "a fence of a newer generation than the group's current %d was found (a group created anew): taken over",
        fence.generation,
    )
    return Fence(fence.keys, fence.generation, force=True)
