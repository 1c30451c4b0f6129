"""Consumer group lag: end offsets minus committed offsets, per input topic (for status, demo, metrics)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from deploy.settings import Settings
from extractors.decode import INPUT_TOPICS


async def consumer_lag(settings: Settings, group_id: str | None = None) -> dict[str, int]:
    """Messages not yet committed by the extractor group, per topic (0 everywhere means caught up)."""
    group = group_id or settings.consumer.group_id
    topics = [settings.kafka.topic_prefix + t for t in INPUT_TOPICS]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None)
    await admin.start()
    await reader.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = [tp for topic in topics for tp in _partitions(reader, topic)]
        ends = await reader.end_offsets(partitions)
        lag: dict[str, int] = {topic: 0 for topic in topics}
        for tp, end in ends.items():
            done = committed.get(tp)
            lag[tp.topic] += end - (done.offset if done is not None and done.offset >= 0 else 0)
        return lag
    finally:
        await reader.stop()
        await admin.close()


def _partitions(reader: AIOKafkaConsumer, topic: str) -> list:  # type: ignore[type-arg]
    from aiokafka.structs import TopicPartition

    return [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
