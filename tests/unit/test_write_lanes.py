"""The consumer's write lanes (extractors/lanes.py): a replica set that refuses holds back only its own clients'
operations, a batch is done only when every lane wrote its part, a client's operations keep their order across a
bucket move, and what is in hand stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from extractors.health import ConsumerHealth
from extractors.holding import hold_until_done
from extractors.lanes import Outcome, Pending, WriteLanes, one_client_each
from extractors.ops import AppendFeatures, ApplyResult, DeleteObject, ReplaceSource, StoreOp
from feature_store.errors import StoreUnavailable
from feature_store.records import Feature


class Bank:
    """Clients named ``<bucket>:<name>``; ``owner`` maps a bucket to its replica set. A replica set in ``down``
    refuses every write; ``written`` keeps, per replica set, what it took: (batch seq, client) in order."""

    def __init__(self, owner: dict[int, int]) -> None:
        self.owner = owner
        self.down: set[int] = set()
        self.stale_through = 0
        self.written: dict[int, list[tuple[int, str]]] = {}

    def bucket_id_for(self, subject: str) -> int:
        return int(subject.split(":")[0])

    def replicaset_id_of_bucket(self, bucket_id: int) -> int | None:
        return self.owner.get(bucket_id)

    def owner_of(self, op: StoreOp) -> int:
        return self.owner[self.bucket_id_for(one_client_each(op)[0][0])]

    async def write(self, batch: str, seq: int, ops: list[StoreOp]) -> ApplyResult | None:
        if seq <= self.stale_through:
            return None
        await asyncio.sleep(0)
        for op in ops:  # routed as the store routes: by the bucket's owner when written
            if self.owner_of(op) in self.down:
                raise StoreUnavailable(f"replica set {self.owner_of(op)} has no master")
        for op in ops:
            self.written.setdefault(self.owner_of(op), []).append((seq, one_client_each(op)[0][0]))
        return ApplyResult(written=len(ops), refused={op.origin: f"drill in {batch}" for op in ops if op.origin >= 90})


def append(subject: str, origin: int = 0) -> AppendFeatures:
    return AppendFeatures((Feature(subject, "transactions", "tx.out.amount", f"t{origin}", 1.0, 1.0),), origin)


class Harness:
    def __init__(self, lanes: WriteLanes[str], health: ConsumerHealth, stop: asyncio.Event) -> None:
        self.lanes, self.health, self.stop = lanes, health, stop


@contextlib.asynccontextmanager
async def lanes_over(
    bank: Bank, *, max_messages: int = 1000, commit_held: Callable[[], bool] = lambda: False
) -> AsyncIterator[Harness]:
    health, stop = ConsumerHealth(), asyncio.Event()

    async def hold(step: Callable[[], Awaitable[ApplyResult | None]], lane: str) -> ApplyResult | None:
        return await hold_until_done(
            step, stage="store", health=health, stop=stop, what=f"the writes to {lane}", max_backoff_s=0.02
        )

    async with asyncio.TaskGroup() as tasks:
        lanes = WriteLanes(
            bank, bank.write, hold, tasks=tasks, max_messages=max_messages, stop=stop, commit_held=commit_held
        )
        try:
            yield Harness(lanes, health, stop)
        finally:
            lanes.close()


async def settled(pending: Pending[str], seconds: float = 2.0) -> Outcome:
    return await asyncio.wait_for(asyncio.shield(pending.outcome), seconds)


async def test_a_replica_set_that_refuses_holds_back_only_its_own_clients() -> None:
    bank = Bank({1: 1, 2: 2})
    bank.down.add(1)
    async with lanes_over(bank) as h:
        batches = [
            await h.lanes.submit(seq, f"b{seq}", [append(f"1:a{seq}"), append(f"2:b{seq}", 90 + seq)], 2)
            for seq in (1, 2, 3)
        ]
        await asyncio.sleep(0.2)
        assert bank.written == {2: [(1, "2:b1"), (2, "2:b2"), (3, "2:b3")]}  # the healthy set took every batch
        assert not any(p.outcome.done() for p in batches)  # none is done: a part of each waits for set 1
        assert set(h.health.holds) == {"the writes to replica set 1"}
        assert h.health.holding_stage == "store" and "replica set 1 has no master" in (h.health.holding_cause or "")
        assert h.lanes.parts_waiting() == {"replica set 1": 2}  # the third is in its attempt
        assert (h.lanes.batches_in_hand, h.lanes.messages_in_hand) == (3, 6)
        bank.down.clear()
        assert [await settled(p) for p in batches] == [Outcome.WRITTEN] * 3
        assert bank.written[1] == [(1, "1:a1"), (2, "1:a2"), (3, "1:a3")]  # in fetch order
        assert [(p.result.written, p.result.refused) for p in batches] == [
            (2, {90 + seq: f"drill in b{seq}"}) for seq in (1, 2, 3)
        ]
        assert not h.health.holds and h.health.holding_stage is None


async def test_what_is_in_hand_is_bounded_and_frees_as_batches_are_released() -> None:
    bank = Bank({1: 1, 2: 2})
    bank.down.add(1)
    async with lanes_over(bank, max_messages=10) as h:
        first = await h.lanes.submit(1, "b1", [append("1:a"), append("2:b")], 6)
        second = asyncio.create_task(h.lanes.submit(2, "b2", [append("2:c")], 6))
        await asyncio.sleep(0.2)
        assert not second.done() and h.lanes.messages_in_hand == 6  # 12 > 10: the second waits for room
        bank.down.clear()
        assert await settled(first) is Outcome.WRITTEN
        assert not second.done()  # written is not enough: room frees when the consumer releases (after its commit)
        h.lanes.release(first)
        assert await settled(await asyncio.wait_for(second, 2)) is Outcome.WRITTEN
        # a batch larger than the bound still goes when nothing else is in hand
        assert h.lanes.messages_in_hand == 6
        h.lanes.release(second.result())
        assert await settled(await h.lanes.submit(3, "b3", [append("2:d")], 50)) is Outcome.WRITTEN


async def test_a_stop_lets_a_waiting_fetch_in() -> None:
    bank = Bank({1: 1})
    bank.down.add(1)
    async with lanes_over(bank, max_messages=5) as h:
        held = await h.lanes.submit(1, "b1", [append("1:a")], 5)
        waiting = asyncio.create_task(h.lanes.submit(2, "b2", [append("1:b")], 5))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        h.stop.set()
        later = await asyncio.wait_for(waiting, 3)
        assert await settled(held) is Outcome.ABANDONED
        assert await settled(later) is Outcome.ABANDONED  # behind an abandoned part: never written
        assert bank.written == {} and not h.health.holds


async def test_a_clients_operations_stay_in_order_across_a_bucket_move() -> None:
    """Bucket 7 moves from replica set 1 to 2 while set 1 holds a part with it: the newer operations of its
    client follow through set 1's lane (the store writes them to set 2 once they go), never ahead of the older
    one. A bucket held by no part goes straight to its new owner's lane."""
    bank = Bank({7: 1, 8: 1, 9: 2})
    bank.down.add(1)
    async with lanes_over(bank) as h:
        older = await h.lanes.submit(1, "b1", [append("7:x", 1), append("8:y", 2)], 2)
        await asyncio.sleep(0.1)
        bank.owner[7] = 2  # a reshard moved bucket 7 (its old part still waits in set 1's lane)
        newer = await h.lanes.submit(2, "b2", [append("7:x", 3), append("9:z", 4)], 2)
        await asyncio.sleep(0.2)
        assert bank.written == {2: [(2, "9:z")]}  # the moved client's newer operation did not overtake
        assert not newer.outcome.done()
        bank.down.clear()
        assert await settled(older) is Outcome.WRITTEN and await settled(newer) is Outcome.WRITTEN
        assert bank.written[2] == [(2, "9:z"), (1, "7:x"), (2, "7:x")]
        h.lanes.release(older)
        h.lanes.release(newer)
        latest = await h.lanes.submit(3, "b3", [append("7:x", 5)], 1)
        assert await settled(latest) is Outcome.WRITTEN
        assert h.lanes.parts_waiting() == {}


async def test_a_batch_marked_stale_is_dropped_by_every_lane() -> None:
    bank = Bank({1: 1, 2: 2})
    bank.down.add(1)
    async with lanes_over(bank) as h:
        batch = await h.lanes.submit(1, "b1", [append("1:a"), append("2:b")], 2)
        await asyncio.sleep(0.1)
        assert bank.written == {2: [(1, "2:b")]}
        bank.stale_through = 1  # a revocation could not wait for it
        await h.lanes.wait_attempts()
        assert await settled(batch) is Outcome.DROPPED
        assert not h.health.holds


async def test_a_batch_without_operations_is_done_at_once() -> None:
    async with lanes_over(Bank({1: 1})) as h:
        assert await settled(await h.lanes.submit(1, "retry of a commit", [], 0)) is Outcome.WRITTEN


def test_each_operation_is_one_clients() -> None:
    two = AppendFeatures(
        (
            Feature("1:a", "s", "n", "o", 1, 1.0),
            Feature("2:b", "s", "n", "o", 2, 1.0),
            Feature("1:a", "s", "m", "o", 3, 1.0),
        ),
        5,
    )
    split = one_client_each(two)
    assert [(s, [f.value for f in op.features]) for s, op in split if isinstance(op, AppendFeatures)] == [
        ("1:a", [1, 3]),
        ("2:b", [2]),
    ]
    assert [op.origin for _, op in split] == [5, 5]
    assert one_client_each(AppendFeatures((), 1)) == []
    delete = DeleteObject("1:a", "t1", 2)
    replace = ReplaceSource("2:b", "profile", 1.0, ())
    assert one_client_each(delete) == [("1:a", delete)] and one_client_each(replace) == [("2:b", replace)]


async def test_while_every_lane_fails_nothing_runs_ahead_and_the_lanes_say_all_ingest_waits() -> None:
    """Nothing can be written, so fetching up to the bound would only fill memory (a reviewer's find)."""
    bank = Bank({1: 1, 2: 2})
    bank.down.update({1, 2})
    async with lanes_over(bank) as h:
        for seq in (1, 2):
            await h.lanes.submit(seq, f"b{seq}", [append(f"1:a{seq}"), append(f"2:b{seq}")], 2)
        third = asyncio.create_task(h.lanes.submit(3, "b3", [append("2:c")], 2))
        await asyncio.sleep(0.2)
        assert h.lanes.all_wait_because() == "no replica set it writes to takes writes"
        assert not third.done()  # two batches deep, as while every lane writes
        bank.down.discard(2)
        await asyncio.wait_for(third, 2)  # one lane writes again: the others run ahead of set 1
        assert h.lanes.all_wait_because() is None
        h.stop.set()


async def test_every_lane_failing_does_not_run_ahead_while_dead_letters_are_held() -> None:
    """The store's network and the dead-letter topic away together: nothing can be written, so nothing runs
    ahead (a reviewer found the dead-letter hold overriding it)."""
    bank = Bank({1: 1, 2: 2})
    bank.down.update({1, 2})
    async with lanes_over(bank, commit_held=lambda: True) as h:
        for seq in (1, 2):
            await h.lanes.submit(seq, f"b{seq}", [append(f"1:a{seq}"), append(f"2:b{seq}")], 2)
        await asyncio.sleep(0.1)  # both lanes failed
        third = asyncio.create_task(h.lanes.submit(3, "b3", [append("2:c")], 2))
        await asyncio.sleep(0.3)
        assert h.lanes.all_wait_because() == "no replica set it writes to takes writes"
        assert not third.done()
        h.stop.set()
        await third


async def test_the_lane_of_buckets_once_without_an_owner_does_not_hide_that_every_replica_set_fails() -> None:
    """A batch met bucket 9 in a move's last step, so the lane of buckets without an owner was made; it idles
    from then on. Both replica sets failing later must still read as all ingest waiting (a reviewer's find)."""
    bank = Bank({1: 1, 2: 2})
    async with lanes_over(bank) as h:
        first = await h.lanes.submit(1, "b1", [append("9:z")], 1)  # bucket 9: no owner yet
        bank.owner[9] = 2  # the move ends: the part is written to the new owner
        assert await settled(first) is Outcome.WRITTEN
        h.lanes.release(first)
        bank.down.update({1, 2})
        for seq in (2, 3):
            await h.lanes.submit(seq, f"b{seq}", [append(f"1:a{seq}"), append(f"2:b{seq}")], 2)
        fourth = asyncio.create_task(h.lanes.submit(4, "b4", [append("2:c")], 2))
        await asyncio.sleep(0.3)
        assert h.lanes.failing() == ["replica set 1", "replica set 2"]
        assert h.lanes.all_wait_because() == "no replica set it writes to takes writes"
        assert not fourth.done()
        h.stop.set()
        await fourth
