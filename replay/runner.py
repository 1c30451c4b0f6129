"""A replay job: re-run the raw events that *arrived* in a time window through the same extractors and the
same idempotent writes, with a consumer of its own (no group: the live consumers keep running and keep their
offsets). Upserts are idempotent and client-data replaces keep "newest wins", so a replay never double counts
and never overwrites newer data with older. Throttled so live traffic keeps its latency; cancellable; a dry
run reports what it would write.

A transaction is the exception to "in any order": its last version wins, so a window holding a first version but
not the correction that arrived after it would set the transaction back. So is client data corrected under the
same time as the version it corrects (a version as new as the stored one applies), and an account's or an
application's row, which a later event under the same id rewrites (a deposit reopened, an application
submitted again). After the window, the replay therefore applies again the versions of these that arrived
after it, up to the topics' end then (``versions_after_window``): all of them when there are no more than in
the window, else only those of the objects the window held. It does so after a cancel or a store failure too,
for the part of the window written. The final state is the newest version; a reader may see the older one for
the moments between the two passes, and ``features_written`` counts both writes. The second pass runs again
over what arrived during it (``TAIL_ROUNDS``); not covered: a newer version that arrives during the last round
and that the live consumer applies before that round writes the version before it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer

from extractors.batch import extract_batch
from extractors.config import IngestConfig
from extractors.decode import INPUT_TOPICS
from extractors.extract import SOURCE_APPLICATIONS, SOURCE_HISTORY, SOURCE_PRODUCTS
from extractors.metrics import REPLAY_OFFSETS_DONE, REPLAY_OFFSETS_TOTAL
from extractors.offsets import partitions_of
from extractors.ops import (
    AppendFeatures,
    DeleteObject,
    ObjectKey,
    ReplaceSource,
    StoreOp,
    apply_ops_retrying,
    superseding_object,
)
from feature_store.client import FeatureStore
from replay.window import PartitionRange, offsets_for_window

State = Literal["pending", "running", "done", "failed", "cancelled"]
BATCH = 2000
TAIL_ROUNDS = 5  # passes over what arrived after the window (each over what arrived during the one before)
# the topics whose later arrivals can stand over a version a replay writes back (`_versioned_object`)
VERSIONED_TOPICS = ("transactions", "clients", "applications", "products")


@dataclass
class ReplayProgress:
    id: str
    start_ts: float
    end_ts: float
    topics: list[str]
    dry_run: bool
    state: State = "pending"
    offsets_total: int = 0
    offsets_done: int = 0
    events: int = 0
    skipped_events: int = 0  # outside the subject filter, or unreadable (those went to the DLQ live)
    features_written: int = 0
    features_unchanged: int = 0
    features_deleted: int = 0
    replaces_applied: int = 0
    replaces_ignored_older: int = 0
    # events the store refused (a fat or denied subject, a name past the budget): the live consumer sent them
    # to the dead-letter topic; a replay reports them here, so "done" never hides them
    events_refused: int = 0
    # versions that arrived after the window, applied again after it (module docstring)
    offsets_after_window: int = 0
    offsets_after_window_done: int = 0
    versions_after_window: int = 0
    would_write_features: int = 0  # dry run
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    partitions: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _subject_of(op: StoreOp) -> str:
    if isinstance(op, AppendFeatures):
        return op.features[0].subject if op.features else ""
    return op.subject


class ReplayJob:
    def __init__(
        self,
        settings: IngestConfig,
        store: FeatureStore,
        start_ts: float,
        end_ts: float,
        *,
        topics: Sequence[str] | None = None,
        subjects: Sequence[str] | None = None,
        dry_run: bool = False,
        max_events_per_s: float | None = None,
    ) -> None:
        canonical = list(topics) if topics else list(INPUT_TOPICS)
        unknown = [t for t in canonical if t not in INPUT_TOPICS]
        if unknown:
            raise ValueError(f"not replayable topics: {unknown}; choose from {list(INPUT_TOPICS)}")
        self.settings = settings
        self.store = store
        self.subjects = set(subjects) if subjects else None
        self.max_events_per_s = max_events_per_s
        self.progress = ReplayProgress(uuid.uuid4().hex[:12], start_ts, end_ts, canonical, dry_run)
        self._cancel = asyncio.Event()
        self.extraction = settings.consumer.extraction()
        # the objects the window held (`_versioned_object`), when the versions after it are filtered by them
        self._window_objects: set[ObjectKey] | None = None

    def cancel(self) -> None:
        self._cancel.set()

    async def run(self) -> ReplayProgress:
        p = self.progress
        p.state, p.started_at = "running", time.time()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()  # inside: a broker out of reach fails the job instead of leaving it "running"
            topics = [self.settings.kafka.topic_prefix + t for t in p.topics]
            partitions = await partitions_of(self.settings.kafka.bootstrap, topics)
            ranges = [r for r in await offsets_for_window(consumer, partitions, p.start_ts, p.end_ts) if r.size]
            p.offsets_total = sum(r.size for r in ranges)
            REPLAY_OFFSETS_TOTAL.labels(p.id).set(p.offsets_total)
            p.partitions = [
                {"topic": r.partition.topic, "partition": r.partition.partition, "start": r.start, "end": r.end}
                for r in ranges
            ]
            versioned = {self.settings.kafka.topic(t) for t in VERSIONED_TOPICS}
            versioned_ranges = [r for r in ranges if r.partition.topic in versioned]
            tail = await self._after_window(consumer, versioned_ranges)
            if sum(r.size for r in tail) > sum(r.size for r in versioned_ranges):
                self._window_objects = set()  # many more arrived since: apply only the window's objects'
            window_error: Exception | None = None
            try:
                await self._read(consumer, ranges, self._replay, stop=self._cancel)
            except Exception as exc:  # a store that failed for good: what was written is still restored
                window_error = exc
            if versioned_ranges and not p.dry_run and p.offsets_done:
                # even after a cancel or a failure: the part of the window written may have set versions back
                await self._restore_newest_versions(consumer, versioned_ranges)
            if window_error is not None:
                raise window_error
            p.state = "cancelled" if self._cancel.is_set() else "done"
        except Exception as exc:  # reported through the job state; the caller decides the exit code
            # a cancel that ended a store retry is a cancel (the error says where it stood)
            p.state, p.error = "cancelled" if self._cancel.is_set() else "failed", f"{type(exc).__name__}: {exc}"
        finally:
            p.finished_at = time.time()
            await consumer.stop()
        return p

    async def _restore_newest_versions(self, consumer: AIOKafkaConsumer, window: list[PartitionRange]) -> None:
        """Apply again the versions (``_versioned_object``) that arrived after the window, up to the end now
        (what arrived during the replay included). Then what arrived during that pass, and so on while anything
        did (up to ``TAIL_ROUNDS``): a newer version the live consumer applied while this pass wrote an older one is
        applied once more after it. Not stopped by a cancel, which only lifts the throttle."""
        if self._window_objects is not None and not self._window_objects:
            return  # the window wrote nothing a later arrival stands over
        for _ in range(TAIL_ROUNDS):
            tail = [r for r in await self._after_window(consumer, window) if r.size]
            if not tail:
                return
            self.progress.offsets_after_window += sum(r.size for r in tail)
            await self._read(consumer, tail, self._reapply_later_versions, stop=None)
            window = tail  # the next round starts where this one ended

    @staticmethod
    async def _after_window(consumer: AIOKafkaConsumer, window: list[PartitionRange]) -> list[PartitionRange]:
        """Per partition of ``window``: from its end to the partition's end now."""
        if not window:
            return []
        ends = await consumer.end_offsets([r.partition for r in window])
        return [PartitionRange(r.partition, r.end, ends[r.partition]) for r in window]

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        ranges: list[PartitionRange],
        handle: Callable[[list[Any]], Awaitable[int]],
        *,
        stop: asyncio.Event | None,
    ) -> None:
        """Read ``ranges`` in batches through ``handle`` (which returns how many events it applied: the
        throttle counts those) until they end or ``stop`` is set."""
        if not ranges:
            return
        consumer.assign([r.partition for r in ranges])
        end_of = {r.partition: r.end for r in ranges}
        for r in ranges:
            consumer.seek(r.partition, r.start)
        remaining = set(end_of)
        started, applied = time.monotonic(), 0
        while remaining and not (stop is not None and stop.is_set()):
            fetched = await consumer.getmany(*remaining, timeout_ms=500, max_records=BATCH)
            records: list[Any] = []
            for tp, batch in fetched.items():
                records.extend(r for r in batch if r.offset < end_of[tp])
            for tp in list(remaining):
                # past the end: the last offset may be a transaction marker, which is never returned as a record
                if await consumer.position(tp) >= end_of[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if records:
                applied += await handle(records)
            await self._throttle(started, applied)

    def _ops(self, records: list[Any]) -> list[StoreOp]:
        ops = extract_batch(records, self.extraction, self.settings.kafka.canonical).ops
        if self.subjects is not None:
            ops = [op for op in ops if _subject_of(op) in self.subjects]
        return ops

    async def _replay(self, records: list[Any]) -> int:
        p = self.progress
        p.offsets_done += len(records)
        REPLAY_OFFSETS_DONE.labels(p.id).set(p.offsets_done)
        ops = self._ops(records)
        if self._window_objects is not None:
            self._window_objects.update(key for op in ops if (key := _versioned_object(op)) is not None)
        origins = {op.origin for op in ops}
        p.events += len(origins)
        p.skipped_events += len(records) - len(origins)
        if p.dry_run:
            p.would_write_features += sum(
                len(op.features) for op in ops if isinstance(op, AppendFeatures | ReplaceSource)
            )
            p.features_deleted += sum(1 for op in ops if isinstance(op, DeleteObject))
            return len(records)
        await self._apply(ops)
        return len(records)

    async def _reapply_later_versions(self, records: list[Any]) -> int:
        """Versions that arrived after the window of what the window wrote (``_versioned_object``), applied
        again: each ends at its newest version, as the live consumer left it (idempotent: a version in place
        only reads)."""
        self.progress.offsets_after_window_done += len(records)
        wanted = self._window_objects
        ops = [
            op
            for op in self._ops(records)
            if (key := _versioned_object(op)) is not None and (wanted is None or key in wanted)
        ]
        if not ops:
            return 0
        await self._apply(ops)
        events = len({op.origin for op in ops})  # a client event gives three operations
        self.progress.versions_after_window += events
        return events

    async def _apply(self, ops: list[StoreOp]) -> None:
        """Apply ``ops`` (retrying the store) and count what they did in the progress."""
        result = await apply_ops_retrying(self.store, ops, give_up=self._cancel.is_set)
        p = self.progress
        p.features_written += result.written
        p.features_unchanged += result.unchanged
        p.features_deleted += result.deleted
        p.replaces_applied += result.replaced
        p.replaces_ignored_older += result.replace_ignored
        p.events_refused += len(result.refused)

    async def _throttle(self, started: float, applied: int) -> None:
        if not self.max_events_per_s or self._cancel.is_set():
            return
        ahead = applied / self.max_events_per_s - (time.monotonic() - started)
        if ahead > 0:  # a cancel ends the wait (a batch of 2,000 at 10 events/s is 200 s of it)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cancel.wait(), ahead)


def _versioned_object(op: StoreOp) -> ObjectKey | None:
    """What ``op`` writes a version of that a later arrival stands over, so that a replay applies the later
    ones again after its window: a transaction (a resend supersedes it), a client's data and its history row
    (the newest version wins, and one as new as the stored one applies: a correction sent under the same time
    as the version it corrects), and an application's or account's row (the later event rewrites it: an
    account reopened, an application submitted again under its id; written back to its window's time, a held
    deposit read as closed and an application as older than its blocking period)."""
    if isinstance(op, ReplaceSource):
        return op.subject, op.source, ""
    if isinstance(op, AppendFeatures) and op.features:
        first = op.features[0]
        if first.source == SOURCE_HISTORY:
            return first.subject, SOURCE_HISTORY, ""
        if first.source in (SOURCE_APPLICATIONS, SOURCE_PRODUCTS):
            return first.subject, first.source, first.object
    return superseding_object(op)
