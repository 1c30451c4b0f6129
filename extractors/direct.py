"""Apply events straight to the store through the same extractors, without Kafka: for tests, training
fixtures and bulk backfills where the broker adds nothing."""

from __future__ import annotations

from collections.abc import Iterable

from extractors.config import TOPICS
from extractors.decode import validate_event
from extractors.extract import ExtractionConfig, extract
from extractors.ops import ApplyResult, FeatureWriter, StoreOp, apply_ops

BATCH_EVENTS = 5000


async def load_events(
    store: FeatureWriter,
    events: Iterable[tuple[str, str, dict[str, object]]],
    config: ExtractionConfig | None = None,
) -> ApplyResult:
    """``(topic_key, key, payload)`` events -> validated -> extracted -> applied in batches."""
    config = config or ExtractionConfig()
    total = ApplyResult()
    ops: list[StoreOp] = []

    async def flush() -> None:
        result = await apply_ops(store, ops)
        total.written += result.written
        total.deleted += result.deleted
        total.refused.update(result.refused)
        ops.clear()

    for count, (topic_key, _, payload) in enumerate(events, start=1):
        ops.extend(extract(validate_event(TOPICS[topic_key], payload), config))
        if count % BATCH_EVENTS == 0:
            await flush()
    await flush()
    return total
