"""Offsets an operator asks about: consumer group lag per topic and dead letters that arrived recently.

Both read the broker only (no group membership), so they work while the consumers run, hang or are down.
Lag is the truth DESIGN.md asks for: end offset minus the group's committed offset of every partition
(a partition the group never committed counts from its first retained offset).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from extractors.config import IngestConfig
from extractors.decode import INPUT_TOPICS


async def partitions_of(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, from the broker's metadata (topics that do not exist have none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if not t.get("error_code")
        for p in sorted(t["partitions"], key=lambda p: p["partition"])
    ]


async def consumer_lag(settings: IngestConfig, group_id: str | None = None) -> dict[str, int]:
    """Messages not yet committed by the extractor group, per input topic (0 everywhere means caught up)."""
    group = group_id or settings.consumer.group_id
    topics = [settings.kafka.topic_prefix + t for t in INPUT_TOPICS]
    partitions = await partitions_of(settings.kafka.bootstrap, topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None)
    await admin.start()
    await reader.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        ends = await reader.end_offsets(partitions) if partitions else {}
        firsts = await reader.beginning_offsets(partitions) if partitions else {}
    finally:
        await reader.stop()
        await admin.close()
    lag: dict[str, int] = {topic: 0 for topic in topics}
    for tp, end in ends.items():
        done = committed.get(tp)
        position = done.offset if done is not None and done.offset >= 0 else firsts.get(tp, 0)
        lag[tp.topic] += max(end - position, 0)
    return lag


async def dead_letters_since(settings: IngestConfig, seconds: float) -> int:
    """How many dead letters arrived in the last ``seconds`` (by the broker's record timestamps)."""
    partitions = await partitions_of(settings.kafka.bootstrap, [settings.kafka.topic("dlq")])
    if not partitions:
        return 0
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None)
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
        since = await reader.offsets_for_times({tp: int((time.time() - seconds) * 1000) for tp in partitions})
    finally:
        await reader.stop()
    return sum(ends[tp] - found.offset for tp, found in since.items() if found is not None)
