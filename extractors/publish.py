"""Publish generated or imported events to the bank topics (JSON, keyed by client so a client's events
stay in order within a topic), waiting for the broker's acknowledgements."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from extractors.config import IngestConfig

IN_FLIGHT = 20_000


async def publish_events(
    settings: IngestConfig,
    events: Iterable[tuple[str, str, dict[str, object]]],
    *,
    progress: bool = True,
) -> dict[str, int]:
    """Send ``(topic_key, key, payload)`` events; returns counts per topic key."""
    counts: Counter[str] = Counter()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    pending: list[asyncio.Future[object]] = []
    bar = Progress(
        TextColumn("publishing events"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
        transient=True,
    )
    try:
        with bar:
            task = bar.add_task("publish", total=None)
            for topic_key, key, payload in events:
                future = await producer.send(
                    settings.kafka.topic(topic_key), value=orjson.dumps(payload), key=key.encode()
                )
                pending.append(future)
                counts[topic_key] += 1
                if len(pending) >= IN_FLIGHT:
                    await asyncio.gather(*pending)
                    bar.update(task, advance=len(pending))
                    pending.clear()
            await asyncio.gather(*pending)
            bar.update(task, advance=len(pending))
    finally:
        await producer.stop()
    return dict(counts)
