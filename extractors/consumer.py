"""`rtrec consume`: a consumer group that reads the bank topics in batches, extracts, writes to the store,
and commits offsets only after the store acknowledged the batch.

At-least-once delivery plus idempotent writes gives exactly-once results in the store: a consumer killed
mid-batch re-reads the uncommitted batch and rewrites the same features. Malformed, invalid or refused
messages go to the dead-letter topic and the consumer keeps going. A stop request (SIGTERM) lets the batch
in hand finish and commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from deploy.settings import Settings
from extractors import metrics
from extractors.decode import INPUT_TOPICS, ExtractionError, decode_event
from extractors.dlq import DeadLetter, send_dead_letters
from extractors.extract import ExtractionConfig, extract
from extractors.ops import ApplyResult, StoreOp, apply_ops_retrying
from feature_store.client import FeatureStore
from feature_store.errors import StoreError

log = logging.getLogger(__name__)


@dataclass
class ConsumerStats:
    batches: int = 0
    messages: int = 0
    dead_letters: int = 0
    features_written: int = 0
    store_retries: int = 0
    # where the time goes (seconds, cumulative): Kafka fetch, decode + extract, store writes, offset commits
    seconds_fetch: float = 0.0
    seconds_extract: float = 0.0
    seconds_store: float = 0.0
    seconds_commit: float = 0.0


@dataclass(frozen=True, slots=True)
class ExtractedBatch:
    ops: list[StoreOp]
    dead: list[DeadLetter]


@dataclass(frozen=True, slots=True)
class _Batch:
    """A fetched and extracted batch on its way to the write stage, with the offsets to commit after it."""

    records: list[ConsumerRecord]
    extracted: ExtractedBatch
    next_offsets: dict[TopicPartition, OffsetAndMetadata]


def extract_batch(
    records: Sequence[ConsumerRecord],
    config: ExtractionConfig,
    canonical: Callable[[str], str] = str,
) -> ExtractedBatch:
    """Pure part of a batch: decode and extract every record; failures become dead letters.
    ``canonical`` maps a (prefixed) topic to its DESIGN.md name, which decides the event type."""
    ops: list[StoreOp] = []
    dead: list[DeadLetter] = []
    for origin, record in enumerate(records):
        try:
            event = decode_event(canonical(record.topic), record.value, record.headers)
            ops.extend(extract(event, config, origin))
        except ExtractionError as exc:
            dead.append(_dead_letter(record, str(exc), exc.kind))
    return ExtractedBatch(ops, dead)


def _dead_letter(record: ConsumerRecord, reason: str, kind: str) -> DeadLetter:
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
        reason=reason,
        error_kind=kind,
    )


class ExtractorConsumer:
    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        *,
        topics: Sequence[str] | None = None,
        group_id: str | None = None,
        extraction: ExtractionConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        kafka = settings.kafka
        self.topics = list(topics) if topics is not None else [kafka.topic_prefix + t for t in INPUT_TOPICS]
        self.group_id = group_id or settings.consumer.group_id
        self.dlq_topic = kafka.topic("dlq")
        self.extraction = extraction or ExtractionConfig()
        self.stats = ConsumerStats()
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    def request_stop(self) -> None:
        """Finish the batch in hand, commit, and return from ``run``."""
        self._stop.set()

    async def run(self, *, idle_exit_s: float | None = None) -> ConsumerStats:
        """Consume until stopped (or, with ``idle_exit_s``, until no message came for that long).

        Two stages overlap: while batch N is written to the store, batch N+1 is fetched and extracted (the
        Python work and the store's work run side by side). Offsets are committed explicitly per batch,
        in order, only after that batch's writes and dead letters were acknowledged.
        """
        bootstrap = self.settings.kafka.bootstrap
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=self.settings.consumer.poll_timeout_ms,
        )
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await self._producer.start()
        await self._consumer.start()
        handoff: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        try:
            fetcher = asyncio.create_task(self._fetch_stage(handoff, idle_exit_s))
            await self._write_stage(handoff)
            await fetcher  # re-raises a fetch-stage failure
        finally:
            await self._consumer.stop()
            await self._producer.stop()
        return self.stats

    async def _fetch_stage(self, handoff: asyncio.Queue[_Batch | None], idle_exit_s: float | None) -> None:
        assert self._consumer is not None
        last_message_at = time.monotonic()
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                fetched = await self._consumer.getmany(
                    timeout_ms=self.settings.consumer.poll_timeout_ms,
                    max_records=self.settings.consumer.max_batch_records,
                )
                self.stats.seconds_fetch += time.perf_counter() - started
                records = [r for partition_records in fetched.values() for r in partition_records]
                if not records:
                    if idle_exit_s is not None and time.monotonic() - last_message_at > idle_exit_s:
                        break
                    continue
                last_message_at = time.monotonic()
                started = time.perf_counter()
                extracted = extract_batch(records, self.extraction, self.settings.kafka.canonical)
                self.stats.seconds_extract += time.perf_counter() - started
                next_offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "") for tp, rs in fetched.items() if rs}
                await handoff.put(_Batch(records, extracted, next_offsets))
        finally:
            await handoff.put(None)

    async def _write_stage(self, handoff: asyncio.Queue[_Batch | None]) -> None:
        assert self._consumer is not None
        while (batch := await handoff.get()) is not None:
            await self._handle(batch.records, batch.extracted)
            started = time.perf_counter()
            await self._consumer.commit(batch.next_offsets)
            self.stats.seconds_commit += time.perf_counter() - started

    async def _handle(self, records: list[ConsumerRecord], extracted: ExtractedBatch) -> None:
        started = time.perf_counter()
        applied = await self._apply_with_retry(extracted.ops)
        self.stats.seconds_store += time.perf_counter() - started
        metrics.BATCH_STORE_SECONDS.observe(time.perf_counter() - started)
        dead = list(extracted.dead)
        for origin, reason in applied.refused.items():
            dead.append(_dead_letter(records[origin], reason, "refused"))
        if dead:
            assert self._producer is not None
            await send_dead_letters(self._producer, dead, self.dlq_topic)
            for letter in dead:
                log.warning("dead letter %s/%s@%s: %s", letter.topic, letter.partition, letter.offset, letter.reason)
        self.stats.batches += 1
        self.stats.messages += len(records)
        self.stats.dead_letters += len(dead)
        self.stats.features_written += applied.features_changed
        for record in records:
            metrics.MESSAGES.labels(record.topic).inc()
        for letter in dead:
            metrics.DEAD_LETTERS.labels(letter.error_kind).inc()
        metrics.FEATURES_WRITTEN.inc(applied.features_changed)

    async def _apply_with_retry(self, ops: list[StoreOp]) -> ApplyResult:
        """Keep retrying retriable store failures (a master moving, a restart): the consumer must not skip."""

        def count_retry(exc: StoreError, backoff: float) -> None:
            self.stats.store_retries += 1
            metrics.STORE_RETRIES.inc()
            log.warning("store write failed (%s), retrying in %.1fs", exc, backoff)

        return await apply_ops_retrying(self.store, ops, on_retry=count_retry)

    async def report_lag(self, interval_s: float = 5.0) -> None:
        """Keep the lag gauge current (run as a background task next to ``run``)."""
        while True:
            await asyncio.sleep(interval_s)
            if self._consumer is None:
                continue
            try:
                per_topic: dict[str, int] = {}
                for tp, behind in (await self.lag()).items():
                    per_topic[tp.topic] = per_topic.get(tp.topic, 0) + behind
                for topic, behind in per_topic.items():
                    metrics.LAG.labels(topic).set(behind)
            except Exception as exc:  # metrics must never stop consumption
                log.debug("lag not available: %s", exc)

    async def lag(self) -> dict[TopicPartition, int]:
        """Messages not yet consumed per partition (end offset minus committed position)."""
        assert self._consumer is not None
        partitions = self._consumer.assignment()
        ends = await self._consumer.end_offsets(list(partitions))
        return {tp: ends[tp] - (await self._consumer.position(tp)) for tp in partitions}
