"""The consumer's write and commit stages around its write lanes (extractors/consumer.py), with stand-ins for the
broker and the store: what is committed when one replica set holds, a rebalance drops batches, a group created
anew takes fences over, a commit keeps failing, or a stop comes. The real broker and cluster drill is
tests/integration/test_ingest_lanes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import ConsumerRecord
from aiokafka.structs import OffsetAndMetadata, TopicPartition

import extractors.consumer as consumer_module
from deploy.settings import load_settings
from extractors.batch import ExtractedBatch
from extractors.consumer import ExtractorConsumer, _Batch
from extractors.ops import AppendFeatures
from feature_store.client import WriteResult
from feature_store.errors import Fenced, StoreUnavailable
from feature_store.records import Feature, Fence

P = TopicPartition("bank.transactions", 0)


class Broker:
    """The consumer's view of its group: one partition, P, held in ``generation``; commits are recorded."""

    def __init__(self, committed: int | None = None, generation: int = 4) -> None:
        self._coordinator = SimpleNamespace(generation=generation, member_id="member-1")
        self._committed = committed
        self.commits: list[int] = []

    def assignment(self) -> set[TopicPartition]:
        return {P}

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._committed

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(offsets[P].offset)
        self._committed = offsets[P].offset


class Store:
    """Clients ``<replica set>:<name>``; a replica set in ``down`` refuses; ``fences`` as lua/put.lua keeps them."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.fences: dict[int, dict[str, int]] = {1: {}, 2: {}}
        self.written: list[tuple[int, str]] = []  # replica set, object (the record's offset)

    def bucket_id_for(self, subject: str) -> int:
        return int(subject.split(":")[0])

    def replicaset_id_of_bucket(self, bucket_id: int) -> int | None:
        return bucket_id

    async def put_features(self, features: Iterable[Feature], fence: Fence | None = None) -> WriteResult:
        rows = list(features)
        await asyncio.sleep(0.01)
        sets = {self.bucket_id_for(f.subject) for f in rows}
        for rs in sets:
            if rs in self.down:
                raise StoreUnavailable(f"replica set {rs} has no master")
            if fence is not None:
                taken = dict(fence.takes_over)
                refused = {
                    key: generation
                    for key, generation in self.fences[rs].items()
                    if key in fence.keys and generation > fence.generation and taken.get(key) != generation
                }
                if refused:
                    raise Fenced(f"refused by {refused}", refused=refused)
        for rs in sets:
            if fence is not None:
                self.fences[rs].update(dict.fromkeys(fence.keys, fence.generation))
        self.written += [(self.bucket_id_for(f.subject), f.object) for f in rows]
        return WriteResult(written=len(rows))


def batch(seq: int, first_offset: int, clients: list[str]) -> _Batch:
    """Records from ``first_offset`` on, one per client ("" for a record that extracts to nothing)."""
    records = [
        ConsumerRecord(P.topic, P.partition, first_offset + i, 0, 0, None, b"{}", None, 0, 2, ())
        for i in range(len(clients))
    ]
    ops = [
        AppendFeatures((Feature(client, "transactions", "tx.out.amount", f"@{first_offset + i}", 1.0, 1.0),), i)
        for i, client in enumerate(clients)
        if client
    ]
    return _Batch(records, ExtractedBatch(list(ops), []), {P: OffsetAndMetadata(first_offset + len(clients), "")}, seq)


def consumer(store: Store, broker: Broker, **settings: Any) -> ExtractorConsumer:
    loaded = load_settings()
    loaded = loaded.model_copy(update={"consumer": loaded.consumer.model_copy(update=settings)})
    made = ExtractorConsumer(loaded, cast(Any, store))
    made._consumer = cast(Any, broker)
    return made


async def run_stages(made: ExtractorConsumer, batches: list[_Batch], meanwhile: Callable[[], Awaitable[None]]) -> None:
    """The write stage, the lanes and the commit stage, as ``run`` builds them, fed ``batches``; ``meanwhile``
    runs alongside, then the fetch stage's end is signalled."""
    handoff: asyncio.Queue[_Batch | None] = asyncio.Queue()
    in_lanes: asyncio.Queue[Any] = asyncio.Queue()
    for each in batches:
        made._fetched_seq = each.seq
        handoff.put_nowait(each)
    async with asyncio.TaskGroup() as stages:
        made._lanes = made._write_lanes(stages)
        stages.create_task(made._write_stage(handoff, in_lanes))
        stages.create_task(made._commit_stage(in_lanes))
        await meanwhile()
        handoff.put_nowait(None)


def stop_after(made: ExtractorConsumer, seconds: float) -> Callable[[], Awaitable[None]]:
    """A ``meanwhile`` for ``run_stages`` that only lets the stages run ``seconds``, then asks for a stop."""

    async def meanwhile() -> None:
        await asyncio.sleep(seconds)
        made.request_stop()

    return meanwhile


async def test_batches_commit_in_fetch_order_once_every_lane_wrote_its_part() -> None:
    store, broker = Store(), Broker(committed=0)
    store.down.add(1)
    made = consumer(store, broker)

    async def meanwhile() -> None:
        await asyncio.sleep(0.3)
        assert sorted(store.written) == [(2, "@1"), (2, "@2"), (2, "@3")]  # the healthy set took its parts
        assert broker.commits == []  # batch 1 waits for replica set 1, batch 2 behind it
        store.down.clear()
        await asyncio.sleep(0.5)
        made.request_stop()

    await run_stages(made, [batch(1, 0, ["1:a", "2:b"]), batch(2, 2, ["2:c", "2:d"])], meanwhile)
    assert broker.commits == [2, 4]
    assert made.health.messages_in_hand == 0 and not made.health.holds


async def test_no_batch_fetched_before_a_rebalance_that_dropped_one_is_committed() -> None:
    """Batch 1 waits for replica set 1 when partitions are revoked; batch 2, all on replica set 2 (or with
    nothing to write), is written whole. Committing it would pass batch 1's unwritten message."""
    for second in (["2:c", "2:d"], ["", ""]):
        store, broker = Store(), Broker(committed=0)
        store.down.add(1)
        made = consumer(store, broker, revoke_drain_s=0.3)

        async def meanwhile(made: ExtractorConsumer = made) -> None:
            await asyncio.sleep(0.3)
            await made._settle_revocation()  # aiokafka's revoke callback; P is assigned again afterwards
            await asyncio.sleep(0.5)
            made.request_stop()

        await run_stages(made, [batch(1, 0, ["1:a", "2:b"]), batch(2, 2, second)], meanwhile)
        assert broker.commits == [], second


async def test_a_fence_taken_over_is_proven_no_later_than_the_oldest_batch_in_hand() -> None:
    """A group created anew (nothing committed, the old group's fence on replica set 2): batch 2's part is
    refused and takes the fence over by a commit. That commit must not pass batch 1, unwritten on set 1."""
    store, broker = Store(), Broker(committed=None, generation=1)
    store.down.add(1)
    store.fences[2]["rtrec-extractors/bank.transactions/0"] = 900
    made = consumer(store, broker)

    await run_stages(made, [batch(1, 0, ["1:a"]), batch(2, 1, ["2:b"])], stop_after(made, 0.5))
    assert (2, "@1") in store.written  # taken over and written
    assert broker.commits == [0]  # the proof: where the oldest batch in hand starts


async def test_a_stop_writes_nothing_after_the_batch_it_abandoned() -> None:
    """Replica set 1 holds batch 1, and replica set 2's lane runs ahead. After a stop nothing after batch 1 can
    be committed, so it is not written either (the stop waited for all of it)."""
    store, broker = Store(), Broker(committed=0)
    store.down.add(1)
    made = consumer(store, broker)
    queued = [batch(seq, 2 * seq, ["2:x", "2:y"]) for seq in range(2, 200)]
    written_at_stop = 0

    async def meanwhile() -> None:
        nonlocal written_at_stop
        await asyncio.sleep(0.3)
        made.request_stop()
        written_at_stop = len(store.written)

    await run_stages(made, [batch(1, 0, ["1:a", "2:b"]), *queued], meanwhile)
    assert broker.commits == []
    assert 2 < written_at_stop < 2 * len(queued)  # the healthy lane ran ahead of the held one
    assert len(store.written) <= written_at_stop + 2  # at most the part in flight


async def test_a_failing_commit_is_retried_by_one_batch_at_a_time() -> None:
    """The coordinator is away: every commit hangs until its timeout. While idle, the fetch stage retries it,
    but with one retry in hand at a time (each poll made one, and a stop waited out every one of them)."""
    consumer_module_timeout = consumer_module.COMMIT_TIMEOUT_S
    consumer_module.COMMIT_TIMEOUT_S = 0.5

    class Away(Broker):
        async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
            self.commits.append(offsets[P].offset)
            await asyncio.sleep(3600)

        async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
            await asyncio.sleep(timeout_ms / 1000)
            return {}

    try:
        store, broker = Store(), Away(committed=0)
        made = consumer(store, broker, poll_timeout_ms=50)
        made._uncommitted = {P: OffsetAndMetadata(7, "")}  # a commit failed before
        handoff: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        in_lanes: asyncio.Queue[Any] = asyncio.Queue()
        most_in_hand = 0
        async with asyncio.TaskGroup() as stages:
            made._lanes = lanes = made._write_lanes(stages)
            stages.create_task(made._fetch_stage(handoff, None))
            stages.create_task(made._write_stage(handoff, in_lanes))
            stages.create_task(made._commit_stage(in_lanes))
            for _ in range(30):
                await asyncio.sleep(0.05)
                most_in_hand = max(most_in_hand, lanes.batches_in_hand)
            made.request_stop()
        assert most_in_hand == 1 and 1 <= len(broker.commits) <= 4
    finally:
        consumer_module.COMMIT_TIMEOUT_S = consumer_module_timeout


class SlowDeadSet(Store):
    """Replica set 1 behind a dead master's request timeout: each attempt fails only after 0.5 s."""

    async def put_features(self, features: Iterable[Feature], fence: Fence | None = None) -> WriteResult:
        rows = list(features)
        if any(self.bucket_id_for(f.subject) == 1 for f in rows):
            await asyncio.sleep(0.5)
            raise StoreUnavailable("replica set 1: request timed out")
        return await super().put_features(rows, fence)


async def test_a_stop_during_a_slow_failing_attempt_writes_nothing_after_the_held_batch() -> None:
    """The stop comes while the held lane waits out an attempt (a reviewer's find): the healthy lane wrote every
    part it had queued, though none could be committed."""
    store, broker = SlowDeadSet(), Broker(committed=0)
    made = consumer(store, broker)
    queued = [batch(seq, 2 * seq, ["2:x", "2:y"]) for seq in range(2, 200)]
    written_at_stop = 0

    async def meanwhile() -> None:
        nonlocal written_at_stop
        await asyncio.sleep(0.7)  # the first attempt failed at 0.5 s (the others run ahead), the second is in flight
        made.request_stop()
        written_at_stop = len(store.written)

    await run_stages(made, [batch(1, 0, ["1:a", "2:b"]), *queued], meanwhile)
    assert broker.commits == []
    assert 2 < written_at_stop < 2 * len(queued)
    assert len(store.written) <= written_at_stop + 2  # at most the part in flight


class AwayProducer:
    """A dead-letter topic that cannot be written."""

    async def send(self, *args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("dead-letter topic away")  # any error: the hold retries every kind


async def test_while_dead_letters_are_held_the_store_writes_go_on_and_status_says_so() -> None:
    """docs/operations.md: a dead-letter topic that cannot be written holds the commits, and the writes to the
    store go on up to the bound (a reviewer found they stopped at two batches)."""
    from dataclasses import replace

    from extractors.batch import dead_letter

    store, broker = Store(), Broker(committed=0)
    made = consumer(store, broker)
    made._producer = cast(Any, AwayProducer())
    first = batch(1, 0, ["2:a", ""])
    first = replace(first, extracted=replace(first.extracted, dead=[dead_letter(first.records[1], "bad", "decode")]))
    queued = [batch(seq, 2 * seq, ["2:x", "2:y"]) for seq in range(2, 60)]

    async def meanwhile() -> None:
        for _ in range(60):  # the fetch waiting for room looks at the commit stage every second
            await asyncio.sleep(0.05)
            if len(store.written) == 1 + 2 * len(queued):
                break
        assert len(store.written) == 1 + 2 * len(queued)  # every batch written while the first one's letters wait
        assert broker.commits == [] and made.health.holding("dead_letters")
        assert made.health.messages_in_hand == 2 + 2 * len(queued) and not made.health.all_ingest_waits
        made.request_stop()

    await run_stages(made, [first, *queued], meanwhile)
    assert broker.commits == []


async def test_a_failed_commit_is_not_retried_after_its_partitions_were_revoked() -> None:
    """The partition moved away, its next owner committed further, and it came back: retrying the old offset
    would move the group back over the other owner's commits (a reviewer's find)."""
    made = consumer(Store(), broker := Broker(committed=0))
    made._uncommitted = {P: OffsetAndMetadata(7, "")}  # a commit failed before the rebalance
    await made._settle_revocation()
    await made._commit(_Batch([], ExtractedBatch([], []), {}, 1))  # the idle retry
    assert broker.commits == []


async def test_a_fence_proof_never_moves_the_committed_offset_back() -> None:
    """The proof reads the committed offset and commits it again; the commit stage committing meanwhile (an
    earlier batch, written in another lane) must not be undone by the older value (a reviewer's find: the
    group would read that batch again after a restart)."""

    class SlowReads(Broker):
        async def committed(self, tp: TopicPartition) -> int | None:
            value = self._committed
            await asyncio.sleep(0.2)  # the answer is on its way while the commit stage commits
            return value

    store, broker = Store(), SlowReads(committed=0, generation=1)
    store.fences[1]["rtrec-extractors/bank.transactions/0"] = 900  # the old group's fence on replica set 1
    made = consumer(store, broker)

    await run_stages(made, [batch(1, 0, ["2:a"]), batch(2, 1, ["1:b"])], stop_after(made, 0.6))
    assert (1, "@1") in store.written  # taken over and written
    assert broker.commits == sorted(broker.commits) and broker.commits[-1] == 2, broker.commits


async def test_a_stop_after_a_revocation_still_commits_what_was_fetched_after_it() -> None:
    """Batch 1, held on replica set 1, is marked stale by a revocation; batch 2, read again from the committed
    offset after the rebalance, is written. A stop during set 1's backoff abandons batch 1, which is never
    committed anyway: batch 2 still is (a reviewer found nothing after it committed)."""
    store, broker = Store(), Broker(committed=0)
    store.down.add(1)
    made = consumer(store, broker, revoke_drain_s=0.2)
    handoff: asyncio.Queue[_Batch | None] = asyncio.Queue()
    in_lanes: asyncio.Queue[Any] = asyncio.Queue()
    async with asyncio.TaskGroup() as stages:
        made._lanes = made._write_lanes(stages)
        stages.create_task(made._write_stage(handoff, in_lanes))
        stages.create_task(made._commit_stage(in_lanes))
        made._fetched_seq = 1
        handoff.put_nowait(batch(1, 0, ["1:a"]))
        await asyncio.sleep(0.6)  # set 1 failed a few times: its backoff is now 0.8 s
        await made._settle_revocation()  # batch 1 is stale
        made._fetched_seq = 2
        handoff.put_nowait(batch(2, 0, ["2:a"]))  # read again from the committed offset
        await asyncio.sleep(0.2)
        assert (2, "@0") in store.written
        made.request_stop()
        handoff.put_nowait(None)
    assert broker.commits == [1]
