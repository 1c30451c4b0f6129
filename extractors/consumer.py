"""`rtrec consume`: a consumer group that reads the bank topics in batches, extracts, writes to the store,
and commits offsets only after the store (and the dead-letter topic) acknowledged the batch.

At-least-once delivery plus idempotent writes gives exactly-once results in the store: a consumer killed
mid-batch re-reads the uncommitted batch and rewrites the same features.

What can go wrong, and what happens:
- a message that cannot be decoded, validated or extracted, or that the store refuses (a fat or denied
  subject, a value it rejects), or that the Kafka client itself cannot parse (see ``unreadable``): that
  message goes to the dead-letter topic with its reason; the rest goes on;
- the store fails (out of memory, a read-only or restarting master, a master without its write lease): the
  writes to that replica set are *held* (see ``holding``): retried with backoff, loudly, uncommitted, until
  they pass, while the writes to the other replica sets go on (see ``lanes``), up to a bound of messages in
  hand; the dead-letter topic fails (a broker away): the batches are held the same way, uncommitted;
- a group rebalance (a consumer joins or leaves): every fetched batch is still applied in order and its
  offsets committed for the partitions still held; a partition that moved restarts at its committed offset
  elsewhere, so some messages may be applied twice, which idempotent writes make harmless;
- a consumer that lost its partitions without hearing of it (stalled past its session, cut off from the
  broker): its writes are fenced by its group generation (see ``fencing``), refused once the partitions' next
  owner wrote, and held until the rejoin drops them;
- a stop request (SIGTERM): the batch in hand finishes and commits; a held batch is abandoned uncommitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from extractors import metrics
from extractors.batch import ExtractedBatch, dead_letter, extract_batch
from extractors.config import IngestConfig
from extractors.decode import INPUT_TOPICS
from extractors.dlq import DeadLetterSender
from extractors.extract import ExtractionConfig
from extractors.fencing import fence_for, take_over
from extractors.health import ConsumerHealth, final_state, heartbeat
from extractors.holding import HoldAbandoned, hold_until_done
from extractors.lanes import Outcome, Pending, WriteLanes
from extractors.ops import ApplyResult, StoreOp, apply_ops
from extractors.unreadable import PARSE_ERRORS, FetchPositions, UnreadableRecord, fetch_around_unreadable
from feature_store.client import FeatureStore
from feature_store.errors import Fenced
from feature_store.records import Fence

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
KAFKA_STOP_TIMEOUT_S = 10.0
# Well under max.poll.interval.ms (5 minutes): how often a consumer whose write stage holds a batch polls.
KEEP_MEMBERSHIP_S = 10.0
COMMIT_TIMEOUT_S = 30.0
# Rejoin time beyond the revoke drain: the heartbeat that tells of the rebalance (3 s) and a store attempt in
# flight (a few request timeouts), which the revoke callback waits for after the drain.
REBALANCE_SLACK_S = 40.0


@dataclass
class ConsumerStats:
    batches: int = 0
    messages: int = 0
    dead_letters: int = 0
    features_written: int = 0
    # where the time goes (seconds, cumulative): Kafka fetch, decode + extract, store writes, offset commits
    seconds_fetch: float = 0.0
    seconds_extract: float = 0.0
    seconds_store: float = 0.0
    seconds_commit: float = 0.0


@dataclass(frozen=True, slots=True)
class _Batch:
    """A fetched and extracted batch on its way to the write stage, with the offsets to commit after it."""

    records: list[ConsumerRecord]
    extracted: ExtractedBatch
    next_offsets: dict[TopicPartition, OffsetAndMetadata]
    seq: int = 0  # fetch order: a rebalance settles every batch fetched before it (see _settle_revocation)


class _RebalanceCounter(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts revocations: after one, the partitions restart from their committed offsets. Before the partitions
    move, ``settle`` deals with the batches fetched so far (aiokafka awaits this callback before rejoining)."""

    def __init__(self, health: ConsumerHealth, settle: Callable[[], Awaitable[None]] | None = None) -> None:
        self.positions = FetchPositions()
        self._health = health
        self._settle = settle

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.positions.forget()
        if revoked:
            self._health.rebalances += 1
            metrics.REBALANCES.inc()
            log.info("partitions revoked by a rebalance: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))
            if self._settle is not None:
                await self._settle()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class ExtractorConsumer:
    def __init__(
        self,
        settings: IngestConfig,
        store: FeatureStore,
        *,
        topics: Sequence[str] | None = None,
        group_id: str | None = None,
        extraction: ExtractionConfig | None = None,
        health: ConsumerHealth | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        kafka = settings.kafka
        self.topics = list(topics) if topics is not None else [kafka.topic_prefix + t for t in INPUT_TOPICS]
        self.group_id = group_id or settings.consumer.group_id
        self.dlq_topic = kafka.topic("dlq")
        self.extraction = extraction or ExtractionConfig()
        self.stats = ConsumerStats()
        self.health = health or ConsumerHealth()
        self.state_file = state_file
        self._stop = asyncio.Event()
        self._rebalances = _RebalanceCounter(self.health, self._settle_revocation)
        # Batches are numbered as fetched. Those up to _written_seq are written; those up to _stale_through were
        # fetched before a rebalance that could not wait for them, and are never written (the write lanes' locks
        # order a store attempt against that mark).
        self._fetched_seq = 0
        self._written_seq = 0
        self._stale_through = 0
        self._lanes: WriteLanes[_Batch] | None = None
        self._in_hand: dict[int, _Batch] = {}  # by seq: given to the lanes and not yet released
        self._commit_retry_in_hand = False  # one retry of a failed commit at a time, however long it waits
        # a fence proof reads the committed offsets and commits them again: a commit in between would be undone
        self._commit_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        # offsets of applied batches whose commit failed, committed with the next batch (or when idle)
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}

    def request_stop(self) -> None:
        """Finish the batch in hand, commit, and return from ``run`` (a held batch is abandoned)."""
        self.health.state = "stopping"
        self._stop.set()

    async def run(self, *, idle_exit_s: float | None = None) -> ConsumerStats:
        """Consume until stopped (or, with ``idle_exit_s``, until no message came for that long).

        Two stages overlap: while batch N is written to the store, batch N+1 is fetched and extracted (the
        Python work and the store's work run side by side). If either stage fails, the other is cancelled
        and the error is raised here: the process exits and its supervisor restarts it.
        """
        beating = asyncio.create_task(heartbeat(self.health, self.state_file))
        lag_watch = asyncio.create_task(self._watch_lag())
        handoff: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        try:
            # a store that is down at start is held like any other store failure, not a crash loop
            await hold_until_done(
                self.store.start, stage="store", health=self.health, stop=self._stop, what="its start"
            )
            await hold_until_done(
                self._start_kafka, stage="kafka", health=self.health, stop=self._stop, what="its start"
            )
            self.health.state = "running"
            await self._run_stages(handoff, idle_exit_s)
            self.health.state = "stopped"
        except HoldAbandoned:
            self.health.state = "stopped"
        except BaseException as exc:
            self.health.state = "failed"
            self.health.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            beating.cancel()
            lag_watch.cancel()
            self._stop.set()  # a revoke callback still draining gives up at once: the group is left cleanly
            await self._stop_clients()
            final_state(self.health, self.state_file)
        return self.stats

    async def _start_kafka(self) -> None:
        """Start the producer and the group consumer; a broker away at start is held like a store outage
        (new clients on every attempt: a client whose start failed is not started twice)."""
        bootstrap = self.settings.kafka.bootstrap
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=self.settings.consumer.poll_timeout_ms,
            # how long the broker waits for members to rejoin: past it, a member still in its revoke callback
            # is dropped and its partitions move while it may still write (aiokafka's default is 10 s)
            rebalance_timeout_ms=int((self.settings.consumer.revoke_drain_s + REBALANCE_SLACK_S) * 1000),
        )
        consumer.subscribe(self.topics, listener=self._rebalances)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        try:
            await producer.start()
            await consumer.start()
        except BaseException:
            for client in (consumer, producer):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), KAFKA_STOP_TIMEOUT_S)
            raise
        self._consumer, self._producer = consumer, producer

    async def _run_stages(self, handoff: asyncio.Queue[_Batch | None], idle_exit_s: float | None) -> None:
        """The stages and the write lanes in one task group: a failure of any cancels the others and is raised
        here."""
        in_lanes: asyncio.Queue[Pending[_Batch] | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as stages:
                self._lanes = self._write_lanes(stages)
                stages.create_task(self._fetch_stage(handoff, idle_exit_s))
                stages.create_task(self._write_stage(handoff, in_lanes))
                stages.create_task(self._commit_stage(in_lanes))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None

    def _write_lanes(self, tasks: asyncio.TaskGroup) -> WriteLanes[_Batch]:
        return WriteLanes(
            self.store,
            self._apply_unless_stale,
            self._hold_store,
            tasks=tasks,
            max_messages=self.settings.consumer.max_messages_in_hand,
            stop=self._stop,
            on_change=self._show_in_hand,
            commit_held=lambda: self.health.holding("dead_letters"),
        )

    async def _stop_clients(self) -> None:
        """Leave the group and close the producer, bounded in time (a broker that is away must not hang exit)."""
        for client in (self._consumer, self._producer):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.stop(), KAFKA_STOP_TIMEOUT_S)
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("closing the Kafka client did not finish cleanly: %s", exc)

    async def _fetch_stage(self, handoff: asyncio.Queue[_Batch | None], idle_exit_s: float | None) -> None:
        assert self._consumer is not None
        last_message_at = time.monotonic()
        while not self._stop.is_set():
            started = time.perf_counter()
            revocations = self.health.rebalances
            fetched, unreadable = await self._fetch()
            self.health.last_poll_at = time.time()
            if self.health.rebalances != revocations:
                # partitions were revoked while fetching: the result may hold records of the old assignment (the
                # one-record-at-a-time path around an unreadable record collects across the revocation), which
                # must not be written now. Read everything again from the committed offsets.
                await self._rewind_to_committed()
                continue
            self.stats.seconds_fetch += time.perf_counter() - started
            records = [r for partition_records in fetched.values() for r in partition_records]
            if not records and not unreadable and self._uncommitted and not self._commit_retry_in_hand:
                self._commit_retry_in_hand = True
                self._fetched_seq += 1
                retry = _Batch([], ExtractedBatch([], []), {}, self._fetched_seq)
                await self._hand_over(handoff, retry)  # retry a failed commit
            if not records and not unreadable:
                if idle_exit_s is not None and time.monotonic() - last_message_at > idle_exit_s:
                    break
                continue
            last_message_at = time.monotonic()
            started = time.perf_counter()
            extracted = extract_batch(records, self.extraction, self.settings.kafka.canonical)
            metrics.TAKEN_AT_LATEST.inc(extracted.taken_at_latest)
            if unreadable:
                extracted = replace(extracted, dead=[*extracted.dead, *(u.dead_letter() for u in unreadable)])
            self.stats.seconds_extract += time.perf_counter() - started
            ends = {tp: rs[-1].offset + 1 for tp, rs in fetched.items() if rs}
            for record in unreadable:
                ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
            for tp, end in ends.items():
                self._rebalances.positions.advance(tp, end)
            next_offsets = {tp: OffsetAndMetadata(end, "") for tp, end in ends.items()}
            self._fetched_seq += 1
            await self._hand_over(handoff, _Batch(records, extracted, next_offsets, self._fetched_seq))
        await handoff.put(None)

    async def _rewind_to_committed(self) -> None:
        """Position every assigned partition at its committed offset (its beginning when nothing is committed).
        A partition that moved away while its offset was asked for is skipped: a rebalance then starts every
        partition at its committed offset anyway (seeking it raised, and the consumer process died)."""
        assert self._consumer is not None
        for tp in list(self._consumer.assignment()):
            committed = await self._consumer.committed(tp)
            if tp not in self._consumer.assignment():
                continue
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    async def _fetch(self) -> tuple[dict[TopicPartition, list[ConsumerRecord]], list[UnreadableRecord]]:
        """The next records, and the records found unreadable by the Kafka client (see ``unreadable``)."""
        assert self._consumer is not None
        timeout_ms, max_records = self.settings.consumer.poll_timeout_ms, self.settings.consumer.max_batch_records
        try:
            return await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records), []
        except PARSE_ERRORS as exc:  # a record aiokafka cannot parse; it would fail the same way forever
            positions = self._rebalances.positions
            return await fetch_around_unreadable(
                self._consumer, positions, exc, timeout_ms=timeout_ms, max_records=max_records
            )

    async def _hand_over(self, handoff: asyncio.Queue[_Batch | None], batch: _Batch) -> None:
        """Queue ``batch`` for the write stage. While the write stage holds a batch (a store outage), keep
        polling Kafka with every partition paused: a consumer that does not poll for ``max.poll.interval.ms``
        is evicted from the group, and its partitions would bounce from consumer to consumer."""
        assert self._consumer is not None
        while True:
            try:
                await asyncio.wait_for(handoff.put(batch), timeout=KEEP_MEMBERSHIP_S)
                return
            except TimeoutError:
                assigned = self._consumer.assignment()
                self._consumer.pause(*assigned)
                try:
                    await self._consumer.getmany(timeout_ms=0)
                finally:
                    self._consumer.resume(*(tp for tp in assigned if tp in self._consumer.assignment()))

    async def _write_stage(
        self, handoff: asyncio.Queue[_Batch | None], in_lanes: asyncio.Queue[Pending[_Batch] | None]
    ) -> None:
        """Give each batch to the write lanes in fetch order (waiting while they have no room for it)."""
        assert self._lanes is not None
        while (batch := await handoff.get()) is not None:
            # the lanes keep each part's operations until it is written; the batch keeps only what its commit needs
            kept = replace(batch, extracted=replace(batch.extracted, ops=[]))
            pending = await self._lanes.submit(batch.seq, kept, batch.extracted.ops, len(batch.records))
            self._in_hand[batch.seq] = kept
            in_lanes.put_nowait(pending)
        self._lanes.close()
        in_lanes.put_nowait(None)

    async def _commit_stage(self, in_lanes: asyncio.Queue[Pending[_Batch] | None]) -> None:
        """Take each batch in fetch order once the lanes are done with it: send its dead letters and commit its
        offsets. A batch fetched before a rebalance that could not wait for it is never committed, even when
        written whole (a batch before it was not). After a batch abandoned by a stop, nothing more is committed
        (it is redelivered on restart)."""
        assert self._lanes is not None
        abandoned = False
        while (pending := await in_lanes.get()) is not None:
            batch = pending.batch
            try:
                outcome = await pending.outcome
                # a stale batch is never committed, abandoned or not: the batches fetched after its rebalance are
                # read again from the committed offsets and stand on their own
                if not abandoned and outcome is Outcome.ABANDONED and not self._stale(batch):
                    abandoned = True
                    self._lanes.abandon_from(batch.seq)
                if abandoned:
                    continue
                if outcome is Outcome.DROPPED or self._stale(batch):
                    log.warning(
                        "dropped batch %d (%d records) fetched before a rebalance", batch.seq, len(batch.records)
                    )
                else:
                    try:
                        await self._finish(pending)
                    except HoldAbandoned:
                        abandoned = True
                        self._lanes.abandon_from(batch.seq)
                        continue
                self._written_seq = batch.seq
                if not self._stale(batch):  # a revocation may have marked it while its dead letters went out
                    await self._commit(batch)
            finally:
                self._in_hand.pop(batch.seq, None)
                self._commit_retry_in_hand = self._commit_retry_in_hand and bool(batch.records or batch.extracted.dead)
                self._lanes.release(pending)
        if abandoned:
            log.warning("stopping with batches uncommitted (they are redelivered on restart)")

    def _stale(self, batch: _Batch) -> bool:
        return batch.seq <= self._stale_through

    async def _hold_store(self, step: Callable[[], Awaitable[ApplyResult | None]], lane: str) -> ApplyResult | None:
        return await hold_until_done(
            step, stage="store", health=self.health, stop=self._stop, what=f"the writes to {lane}"
        )

    def _show_in_hand(self) -> None:
        assert self._lanes is not None
        self.health.messages_in_hand = self._lanes.messages_in_hand
        self.health.max_messages_in_hand = self._lanes.max_messages
        because = self._lanes.all_wait_because()
        self.health.all_ingest_waits, self.health.all_ingest_waits_because = because is not None, because
        metrics.MESSAGES_IN_HAND.set(self._lanes.messages_in_hand)

    async def _settle_revocation(self) -> None:
        """Called as partitions are revoked, before they move: wait (``consumer.revoke_drain_s`` at most) until
        every batch fetched so far is written. Written later, after the partitions' next owner applied newer
        events, a batch would undo them: a transaction's first version would replace its correction for good.
        Batches still unwritten then (a store outage holds them) are marked never to be written, and an attempt
        in flight ends first; the next owner, or this consumer again, reads them from the committed offsets."""
        through = self._fetched_seq
        deadline = time.monotonic() + self.settings.consumer.revoke_drain_s
        while self._written_seq < through and time.monotonic() < deadline and not self._stop.is_set():
            await asyncio.sleep(0.05)
        if self._written_seq < through:
            self._stale_through = through
            log.warning(
                "partitions revoked with %d fetched batches unwritten: they will not be written (their next owner "
                "reads them again from the committed offsets)",
                through - self._written_seq,
            )
            if self._lanes is not None:
                await self._lanes.wait_attempts()
        # a failed commit's offsets (before or during the drain) are the next owner's to commit: retried after the
        # partition came back, they would move the group back over that owner's commits
        self._uncommitted = {}

    async def _apply_unless_stale(self, batch: _Batch, seq: int, ops: list[StoreOp]) -> ApplyResult | None:
        """One store attempt for ``ops`` of ``batch`` (one write lane's part), fenced by the group generation this
        consumer holds its partitions in; None when a rebalance marked the batch never to be written. A refusal
        by the fence is held like a store failure (the rejoin that follows drops the batch), unless the broker
        confirms the generation is current (a group created anew): then the fence is taken over."""
        if seq <= self._stale_through:
            return None
        fence = self._fence(batch)
        started = time.perf_counter()
        try:
            applied = await apply_ops(self.store, ops, fence)
        except Fenced as exc:
            if fence is None:
                raise
            assert self._consumer is not None
            # proven by committing no later than the oldest batch in hand: an older one may still be unwritten
            in_hand = [record for held_seq, held in self._in_hand.items() if held_seq <= seq for record in held.records]
            async with self._commit_lock:
                taken = await take_over(
                    self._consumer, fence, in_hand or batch.records, dict(exc.fields.get("refused") or {})
                )
            if seq <= self._stale_through:  # a revocation marked it while the broker was asked
                return None
            started = time.perf_counter()
            applied = await apply_ops(self.store, ops, taken)
        seconds = time.perf_counter() - started
        self.stats.seconds_store += seconds
        metrics.BATCH_STORE_SECONDS.observe(seconds)
        return applied

    def _fence(self, batch: _Batch) -> Fence | None:
        assert self._consumer is not None
        partitions = set(batch.next_offsets)
        return fence_for(self._consumer, self.group_id, partitions) if partitions else None

    async def _finish(self, pending: Pending[_Batch]) -> None:
        """Send the dead letters of a written batch (its own and the operations the store refused) and count it."""
        batch, applied = pending.batch, pending.result
        if not batch.records and not batch.extracted.dead:
            return  # a retry of a failed commit
        dead = list(batch.extracted.dead)
        for origin, reason in applied.refused.items():
            dead.append(dead_letter(batch.records[origin], reason, "refused"))
        if dead:
            assert self._producer is not None
            sender = DeadLetterSender(self._producer, dead, self.dlq_topic)
            await hold_until_done(
                sender.send, stage="dead_letters", health=self.health, stop=self._stop, what="a batch's dead letters"
            )
            for letter in dead:
                log.warning("dead letter %s/%s@%s: %s", letter.topic, letter.partition, letter.offset, letter.reason)
        self.stats.batches += 1
        self.stats.messages += len(batch.records)
        self.stats.dead_letters += len(dead)
        self.stats.features_written += applied.features_changed
        self.health.batches, self.health.messages = self.stats.batches, self.stats.messages
        self.health.dead_letters, self.health.features_written = self.stats.dead_letters, self.stats.features_written
        for record in batch.records:
            metrics.MESSAGES.labels(record.topic).inc()
        for letter in dead:
            metrics.DEAD_LETTERS.labels(letter.error_kind).inc()
        metrics.FEATURES_WRITTEN.inc(applied.features_changed)

    async def _commit(self, batch: _Batch) -> None:
        """Commit the batch's offsets for the partitions this consumer still holds. Safe after a rebalance
        too: every fetched batch is applied in order before its commit, so a committed offset never passes a
        message that was not applied (a partition that moved away and back is at worst applied twice, which
        idempotent writes make harmless). A failed commit is logged and counted; the next one covers it."""
        assert self._consumer is not None
        for tp, offset in batch.next_offsets.items():
            if tp not in self._uncommitted or self._uncommitted[tp].offset < offset.offset:
                self._uncommitted[tp] = offset
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
        self._uncommitted = offsets  # a partition that moved away is the new owner's to commit
        if not offsets:
            return
        started = time.perf_counter()
        try:  # bounded: aiokafka retries a commit for as long as the coordinator is away
            async with self._commit_lock:
                await asyncio.wait_for(self._consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:  # a rebalance, a coordinator moving, a broker away
            self.health.commit_failures += 1
            metrics.COMMIT_FAILURES.inc()
            log.warning("offset commit failed (retried with the next batch, or when idle): %s", exc)
            return
        self._uncommitted = {}
        self.stats.seconds_commit += time.perf_counter() - started
        self.health.last_commit_at = time.time()

    async def _watch_lag(self) -> None:
        """Keep the lag gauge and the health's lag current (messages behind on this consumer's partitions)."""
        while True:
            await asyncio.sleep(LAG_INTERVAL_S)
            if self._consumer is None:
                continue
            try:
                per_topic = {topic: 0 for topic in self.topics}
                for tp, behind in (await self.lag()).items():
                    per_topic[tp.topic] = per_topic.get(tp.topic, 0) + behind
                for topic, behind in per_topic.items():
                    metrics.LAG.labels(topic).set(behind)
                self.health.lag, self.health.lag_at = per_topic, time.time()
            except (KafkaError, OSError, TimeoutError, AssertionError) as exc:  # metrics must never stop consumption
                log.debug("lag not available: %s", exc)

    async def lag(self) -> dict[TopicPartition, int]:
        """Messages not yet consumed per assigned partition (end offset minus committed offset)."""
        assert self._consumer is not None
        partitions = list(self._consumer.assignment())
        if not partitions:
            return {}
        ends = await self._consumer.end_offsets(partitions)
        lag = {}
        for tp in partitions:
            committed = await self._consumer.committed(tp)
            lag[tp] = max(ends[tp] - (committed if committed is not None else 0), 0)
        return lag
