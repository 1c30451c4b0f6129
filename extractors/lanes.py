"""Write lanes: a consumer writes to the store in one ordered lane per replica set, so a replica set that cannot
write (its master dead or without its write lease, its memory full) holds back only its own clients' facts.

Before lanes, a fetched batch was written whole: one replica set that refused held every client's facts, the
applications of clients on healthy replica sets included, and those were then offered the products they had
just applied for. Now a batch is split by the replica set each operation's client lives on (a *part* per
replica set). Each lane writes its parts one at a time in fetch order and holds (retries, loudly) while its
replica set refuses, and the other lanes go on.

Two rules keep this as safe as writing batches whole:
- **Commits wait for every lane.** A batch is done when all its parts are; the consumer commits batches in
  fetch order, so a committed offset never passes a message with an unwritten part. A consumer restarted
  during an outage reads the held replica set's messages again, and writes the others' again (idempotent).
- **A client's operations keep their order.** A client's bucket stays in the lane it is in while any part
  holding it is unwritten, so when a reshard moves the bucket meanwhile, the newer operations follow the
  older ones through that lane (the store sends them to the bucket's new owner). In another lane they could
  overtake: a transaction's first version written after its correction would replace it.

What the lanes keep in hand is bounded. While every lane writes, ``ahead_batches`` deep, as the consumer's
pipeline always was (a rebalance then waits for little). While some lane fails and another can write, or the
consumer's commit stage is held (its dead letters cannot be sent), the lanes run ahead up to ``max_messages``
(counted until the consumer releases a batch after its commit); at that bound the fetch waits, and ingest holds
as a whole, as it did before lanes. While every lane fails, nothing runs ahead: nothing could be written.
After a stop, nothing from the oldest batch a lane is held on (or the consumer gave up) is written: it could
never be committed.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from extractors.holding import HoldAbandoned
from extractors.ops import AppendFeatures, ApplyResult, StoreOp
from feature_store.records import Feature

B = TypeVar("B")
LaneKey = int | None  # the replica set id; None: a bucket no replica set owns this moment (its move ends soon)

# how often a fetch waiting for room looks at the stop request and whether the commit stage holds
ROOM_POLL_S = 1.0
# batches in hand while no lane fails: one being written, one ready (the fetch and the writes overlap)
AHEAD_BATCHES = 2


class Router(Protocol):
    """Where a client's operations go (FeatureStore, or the in-memory store in unit tests)."""

    def bucket_id_for(self, subject: str) -> int: ...

    def replicaset_id_of_bucket(self, bucket_id: int) -> int | None: ...


class Outcome(enum.IntEnum):
    """How a batch left the lanes; a batch with parts of several outcomes takes the highest."""

    WRITTEN = 0
    DROPPED = 1  # fetched before a rebalance that moved on without it: never written, never committed
    ABANDONED = 2  # a stop came while its lane was held: uncommitted, redelivered on restart


@dataclass(eq=False)
class Pending(Generic[B]):
    """A batch on its way through the lanes; ``outcome`` resolves when every part of it has been written,
    dropped or abandoned, and ``result`` sums what the written parts did."""

    seq: int
    batch: B
    messages: int
    parts_left: int
    outcome: asyncio.Future[Outcome]
    result: ApplyResult = field(default_factory=ApplyResult)
    worst: Outcome = Outcome.WRITTEN


@dataclass(eq=False)
class _Part:
    pending: Pending[Any]
    ops: list[StoreOp]
    buckets: set[int]


@dataclass(eq=False)
class _Lane:
    key: LaneKey
    queue: asyncio.Queue[_Part | None] = field(default_factory=asyncio.Queue)
    # held for each store attempt: a revocation waits on it for an attempt in flight (``wait_attempts``)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failing: bool = False  # its last attempt failed: the other lanes may run ahead
    held_seq: float = math.inf  # the batch of the part whose last attempt failed

    @property
    def label(self) -> str:
        return f"replica set {self.key}" if self.key is not None else "buckets without an owner"


Write = Callable[[B, int, list[StoreOp]], Awaitable[ApplyResult | None]]
Hold = Callable[[Callable[[], Awaitable[ApplyResult | None]], str], Awaitable[ApplyResult | None]]


class WriteLanes(Generic[B]):
    """The lanes of one consumer. ``write(batch, seq, ops)`` makes one store attempt for a part (None: the batch
    is stale, drop it); ``hold(step, lane label)`` repeats a failing attempt until it passes, raising
    ``HoldAbandoned`` on a stop. Lane tasks are started in ``tasks`` and end after ``close``. ``on_change`` is
    called whenever what is in hand, a lane's failing or ``full`` changes (the consumer shows them);
    ``commit_held`` says whether the consumer's commit stage is held (the lanes may run ahead meanwhile)."""

    def __init__(
        self,
        router: Router,
        write: Write[B],
        hold: Hold,
        *,
        tasks: asyncio.TaskGroup,
        max_messages: int,
        stop: asyncio.Event,
        ahead_batches: int = AHEAD_BATCHES,
        on_change: Callable[[], None] = lambda: None,
        commit_held: Callable[[], bool] = lambda: False,
    ) -> None:
        self._router = router
        self._write = write
        self._hold = hold
        self._tasks = tasks
        self.max_messages = max_messages
        self._stop = stop
        self._ahead_batches = ahead_batches
        self._on_change = on_change
        self._commit_held = commit_held
        self._lanes: dict[LaneKey, _Lane] = {}
        self._bucket_lane: dict[int, tuple[LaneKey, int]] = {}  # bucket -> its lane, unwritten parts holding it
        self.batches_in_hand = 0
        self.messages_in_hand = 0
        self.full = False  # a batch waits for room under ``max_messages``: all ingest waits
        self._abandoned_from: float = math.inf  # the oldest batch a stop abandoned a part of
        self._room_freed = asyncio.Event()

    async def submit(self, seq: int, batch: B, ops: Sequence[StoreOp], messages: int) -> Pending[B]:
        """Split ``ops`` into parts and queue each on its lane, once there is room for ``messages`` more (at once
        when nothing is in hand, or after a stop request). The returned batch must be ``release``d."""
        while not self._has_room(messages):
            self._show_full(self.messages_in_hand + messages > self.max_messages)
            self._room_freed.clear()
            try:
                await asyncio.wait_for(self._room_freed.wait(), ROOM_POLL_S)
            except TimeoutError:
                pass
        self._show_full(False)
        parts = self._split(ops)
        pending: Pending[B] = Pending(seq, batch, messages, len(parts), asyncio.get_running_loop().create_future())
        self.batches_in_hand += 1
        self.messages_in_hand += messages
        if not parts:
            pending.outcome.set_result(Outcome.WRITTEN)
        for key, (part_ops, buckets) in parts.items():
            self._lane(key).queue.put_nowait(_Part(pending, part_ops, buckets))
        self._on_change()
        return pending

    def abandon_from(self, seq: float) -> None:
        """Batch ``seq`` was given up on a stop (a lane held on it, or the consumer holding its dead letters): no
        part of it or of a later batch is written (none can be committed)."""
        self._abandoned_from = min(self._abandoned_from, seq)

    def release(self, pending: Pending[B]) -> None:
        """The consumer is done with a batch (committed, dropped or abandoned): its messages leave the count."""
        self.batches_in_hand -= 1
        self.messages_in_hand -= pending.messages
        self._room_freed.set()
        self._on_change()

    def close(self) -> None:
        """No more batches: each lane ends once its queue is written (or abandoned)."""
        for lane in self._lanes.values():
            lane.queue.put_nowait(None)

    async def wait_attempts(self) -> None:
        """Return once no store attempt begun before this call is still running."""
        for lane in list(self._lanes.values()):
            async with lane.lock:
                pass

    def parts_waiting(self) -> dict[str, int]:
        """Parts queued per lane that has any (a lane behind or held)."""
        return {lane.label: lane.queue.qsize() for lane in self._lanes.values() if lane.queue.qsize()}

    def failing(self) -> list[str]:
        """The lanes whose last store attempt failed."""
        return [lane.label for lane in self._lanes.values() if lane.failing]

    def all_wait_because(self) -> str | None:
        """Why none of this consumer's ingest moves (None while some of it does): a batch found no room under
        the bound, or every lane fails."""
        if self.full:
            return f"no room for more under the bound of {self.max_messages:,}"
        if self._every_lane_fails():
            return "no replica set it writes to takes writes"
        return None

    def _has_room(self, messages: int) -> bool:
        """Room for a batch of ``messages``: at once when nothing is in hand, or after a stop; else, up to
        ``max_messages``, while one lane fails and another can write or the commit stage is held (the writes go
        on); else ``ahead_batches`` deep."""
        if self.messages_in_hand == 0 or self._stop.is_set():
            return True
        if self.messages_in_hand + messages > self.max_messages:
            return False
        if self.batches_in_hand < self._ahead_batches:
            return True
        if self._every_lane_fails():
            return False
        return any(lane.failing for lane in self._lanes.values()) or self._commit_held()

    def _every_lane_fails(self) -> bool:
        """Every replica set's lane fails (the lane of buckets without an owner, made in a move's last step,
        may idle for good: it is not counted)."""
        lanes = [lane for lane in self._lanes.values() if lane.key is not None or lane.failing]
        return bool(lanes) and all(lane.failing for lane in lanes)

    def _show_full(self, full: bool) -> None:
        if full != self.full:
            self.full = full
            self._on_change()

    def _split(self, ops: Sequence[StoreOp]) -> dict[LaneKey, tuple[list[StoreOp], set[int]]]:
        """Operations per lane, in their order, with the buckets each part holds (registered as held)."""
        parts: dict[LaneKey, tuple[list[StoreOp], set[int]]] = {}
        bucket_of: dict[str, int] = {}
        for op in ops:
            for subject, one in one_client_each(op):
                bucket = bucket_of.get(subject)
                if bucket is None:
                    bucket = bucket_of[subject] = self._router.bucket_id_for(subject)
                held = self._bucket_lane.get(bucket)
                key = held[0] if held is not None else self._router.replicaset_id_of_bucket(bucket)
                part_ops, buckets = parts.setdefault(key, ([], set()))
                part_ops.append(one)
                buckets.add(bucket)
        for key, (_, buckets) in parts.items():
            for bucket in buckets:
                lane, holding = self._bucket_lane.get(bucket, (key, 0))
                self._bucket_lane[bucket] = (lane, holding + 1)
        return parts

    def _lane(self, key: LaneKey) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
            self._tasks.create_task(self._run(lane), name=f"write lane: {lane.label}")
        return lane

    async def _run(self, lane: _Lane) -> None:
        while (part := await lane.queue.get()) is not None:
            if self._stop.is_set():  # a held lane gives its part up at its next failure: nothing after is committed
                self.abandon_from(
                    min((other.held_seq for other in self._lanes.values() if other.failing), default=math.inf)
                )
            if part.pending.seq >= self._abandoned_from:  # never committed: not worth writing
                self._finish(part, None, Outcome.ABANDONED)
                continue
            try:
                result = await self._hold(partial(self._attempt, lane, part), lane.label)
            except HoldAbandoned:
                self.abandon_from(part.pending.seq)
                self._finish(part, None, Outcome.ABANDONED)
                continue
            self._finish(part, result, Outcome.WRITTEN if result is not None else Outcome.DROPPED)

    async def _attempt(self, lane: _Lane, part: _Part) -> ApplyResult | None:
        async with lane.lock:
            try:
                result = await self._write(part.pending.batch, part.pending.seq, part.ops)
            except Exception:
                lane.held_seq = part.pending.seq
                self._show_failing(lane, True)
                raise
        lane.held_seq = math.inf
        self._show_failing(lane, False)
        return result

    def _show_failing(self, lane: _Lane, failing: bool) -> None:
        if failing != lane.failing:
            lane.failing = failing
            self._room_freed.set()  # a lane failing lets the others run ahead
            self._on_change()

    def _finish(self, part: _Part, result: ApplyResult | None, outcome: Outcome) -> None:
        pending = part.pending
        if result is not None:
            pending.result.add(result)
        pending.worst = max(pending.worst, outcome)
        pending.parts_left -= 1
        for bucket in part.buckets:
            lane, holding = self._bucket_lane[bucket]
            if holding > 1:
                self._bucket_lane[bucket] = (lane, holding - 1)
            else:
                del self._bucket_lane[bucket]
        if pending.parts_left == 0:
            pending.outcome.set_result(pending.worst)


def one_client_each(op: StoreOp) -> list[tuple[str, StoreOp]]:
    """``op`` with the client it is for; an append of several clients' features split per client (extraction
    makes one client's operations per event, so this is one pass over the features), an append of nothing
    dropped (it writes nothing)."""
    if not isinstance(op, AppendFeatures):
        return [(op.subject, op)]
    if not op.features:
        return []
    first = op.features[0].subject
    if all(f.subject == first for f in op.features):
        return [(first, op)]
    per_client: dict[str, list[Feature]] = {}
    for feature in op.features:
        per_client.setdefault(feature.subject, []).append(feature)
    return [(subject, AppendFeatures(tuple(features), op.origin)) for subject, features in per_client.items()]
