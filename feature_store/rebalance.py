"""Moving one bucket between replica sets (vshard's protocol, driven from the client side), and settling
moves that stopped half-way.

1. the source marks the bucket ``sending``: it refuses writes from now on (writers get WRONG_BUCKET and
   retry) but still serves reads;
2. the records are copied page by page to the destination, which holds the bucket as ``receiving``;
3. the source marks it ``sent``: it serves nothing any more. The move goes on once a replica of the source
   holds the mark (a replica promoted without it would serve the bucket, or even take writes for it), else it
   is rolled back;
4. the destination activates it; readers and writers refresh their map and land there;
5. once a replica of the destination has every row of it, the source drops its copy in yielding batches (until
   then the source's copy is the only other one: a destination master lost before replicating would take the
   bucket's history with it).

So a bucket is never writable, nor readable, in two places. Every step carries the move's id: a step of a
move that was rolled back fails instead of reviving it. Records keep their composite primary key (sequence
id, replica set id of origin), so they never collide with the destination's own records: the field report's
lesson about per-shard sequences.

A move that stops half-way (the mover killed, the destination dead) leaves the bucket ``sending`` or
``sent`` at the source, refusing writes; ``recover_moves`` (`rtrec reshard --recover`) settles every such move.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass

from feature_store.client import FeatureStore
from feature_store.errors import BucketStateError, StoreError
from feature_store.replicaset import ReplicaSetClient

log = logging.getLogger(__name__)

BUCKET_PAGE = 2000
# how long a move waits for a replica of the destination before it keeps the source's copy
REPLICATION_WAIT_S = 10.0


class MoveNotReplicated(StoreError):
    """The bucket is active at its destination, but no replica there has it yet: the source keeps its copy."""


@dataclass(frozen=True)
class MoveResult:
    bucket_id: int
    source: int
    destination: int
    records: int


async def move_bucket(
    store: FeatureStore,
    bucket_id: int,
    destination: int,
    *,
    page: int = BUCKET_PAGE,
    refresh: bool = True,
    replication_wait_s: float = REPLICATION_WAIT_S,
) -> MoveResult:
    """Move one bucket. ``refresh=False`` trusts the caller's bucket map (bulk moves refresh once at the end)."""
    if refresh:
        await store.refresh_bucket_map()
    source_rs = store.replicaset_of_bucket(bucket_id)
    if source_rs.id == destination:
        raise BucketStateError(f"bucket {bucket_id} is already on replica set {destination}")
    target_rs = store.replicasets[destination]
    move_id = uuid.uuid4().hex[:16]
    await source_rs.call("bucket_start_send", [bucket_id, destination, move_id])
    try:
        moved = await _copy(source_rs, target_rs, bucket_id, move_id, page)
        await source_rs.call("bucket_mark_sent", [bucket_id, move_id])
        await _sent_replicated(source_rs, bucket_id, move_id, replication_wait_s)
    except StoreError:
        # before `sent` the source still has everything: give the bucket back now rather than leave it
        # refusing writes until a recover (which would do the same)
        with contextlib.suppress(StoreError):
            # write=True: the master's word (a lagging replica would say the move left no trace there)
            state = await target_rs.call("bucket_move_state", [bucket_id, move_id], write=True)
            if state["status"] == "receiving" and state["move_id"] == move_id:
                await target_rs.call("bucket_discard", [bucket_id])
            await source_rs.call("bucket_cancel_send", [bucket_id])
        raise
    await target_rs.call("bucket_activate", [bucket_id, move_id])
    await _drop_once_replicated(source_rs, target_rs, bucket_id, move_id, replication_wait_s)
    if refresh:
        await store.refresh_bucket_map()
    return MoveResult(bucket_id, source_rs.id, destination, moved)


async def _copy(
    source_rs: ReplicaSetClient, target_rs: ReplicaSetClient, bucket_id: int, move_id: str, page: int
) -> int:
    """Every page of the bucket from the source to the destination's receiving copy (imports are idempotent, so
    copying again over a partial copy completes it). Returns the features copied."""
    moved, after = 0, None
    while True:
        chunk = await source_rs.call("bucket_export", [bucket_id, after, page])
        features = chunk["features"]
        args = [bucket_id, features, chunk.get("extra"), move_id, after is None, source_rs.id]
        await target_rs.call("bucket_import", args)
        moved += len(features)
        after = chunk.get("next_after")
        if after is None:
            return moved


class SendNotReplicated(StoreError):
    """No replica of the source holds the bucket ``sent``: the move is given back rather than activated."""


async def _sent_replicated(source_rs: ReplicaSetClient, bucket_id: int, move_id: str, wait_s: float) -> None:
    """Return once a replica of the source holds the bucket ``sent``; otherwise raise, and the move is rolled
    back. Activated at the destination before that, a source master lost and replaced by a replica without the
    mark left the bucket readable there (``sending``, a copy the new writes no longer reach) or, with the start
    missed too, writable in two replica sets."""
    answer = await source_rs.call("bucket_wait_sent_replicated", [bucket_id, move_id, wait_s], timeout=wait_s + 5)
    if not answer["replicated"]:
        reason = "does not hold it sent" if not answer["sent"] else f"has no replica caught up within {wait_s:g} s"
        raise SendNotReplicated(f"bucket {bucket_id}: the master of replica set {source_rs.id} {reason}")


async def _drop_once_replicated(
    source_rs: ReplicaSetClient,
    target_rs: ReplicaSetClient,
    bucket_id: int,
    move_id: str | None,
    wait_s: float = REPLICATION_WAIT_S,
) -> None:
    """Drop the source's copy once a replica of the destination has the bucket; otherwise keep it (the bucket is
    served by the destination meanwhile) and say how to finish."""
    answer = await target_rs.call("bucket_wait_replicated", [bucket_id, move_id, wait_s], timeout=wait_s + 5)
    if not answer.get("activated", True):  # a storage not yet upgraded answers without it
        raise MoveNotReplicated(
            f"bucket {bucket_id}: the master of replica set {target_rs.id} does not hold its activation (a "
            f"replica promoted before the activation reached it?): replica set {source_rs.id} keeps its copy "
            "(sent, serving nothing); `rtrec reshard --recover` copies it again or gives it back"
        )
    if not answer["replicated"]:
        raise MoveNotReplicated(
            f"bucket {bucket_id} is active on replica set {target_rs.id}, but none of its replicas caught up within "
            f"{wait_s:g} s: replica set {source_rs.id} keeps its copy (sent, serving nothing); "
            "`rtrec reshard --recover` drops it once they follow"
        )
    await source_rs.call("bucket_drop", [bucket_id])


@dataclass(frozen=True)
class Recovery:
    """What ``recover_moves`` did with one bucket found in flight."""

    bucket_id: int
    source: int | None
    destination: int | None
    action: str  # "finished" | "resumed" | "rolled back" | "discarded" | "left"
    reason: str


async def recover_moves(store: FeatureStore) -> list[Recovery]:
    """Settle every bucket a move left in flight (run it when no `rtrec reshard` is running; twice is safe):

    - the destination activated this move (it may have moved the bucket on since): finish, drop the source;
    - the destination holds this move's copy and the source had sent everything: resume, activate it there;
    - the destination holds a partial copy of this move: roll back (discard it, the source takes the bucket
      back and serves writes again);
    - the destination has no trace of this move: nothing arrived, roll back;
    - the destination does not answer: leave it and say so (start it again and rerun);
    - a receiving copy whose move no source knows: discard it if another replica set owns the bucket.
    A step of the interrupted mover that still runs fails (every step carries the move id)."""
    transfers = {}
    for rs in store.replicasets.values():
        try:
            transfers[rs.id] = await rs.call("bucket_transfers", [], write=True, timeout=3.0)  # the master's
        except StoreError as exc:  # its moves are looked at when it answers again
            log.warning("replica set %s not inspected: %s", rs.id, exc)
    results: list[Recovery] = []
    settled: set[tuple[int, int]] = set()
    for source, found in transfers.items():
        for bucket_id, status, destination, move_id in found["sending"]:
            results.append(await _settle(store, bucket_id, source, status, destination, move_id))
            settled.add((destination, bucket_id))
    owners = await _owners(store)
    for holder, found in transfers.items():
        for bucket_id, _source, _move_id in found["receiving"]:
            if (holder, bucket_id) in settled:
                continue
            if owners.get(bucket_id) not in (None, holder):
                await store.replicasets[holder].call("bucket_discard", [bucket_id])
                results.append(
                    Recovery(bucket_id, None, holder, "discarded", "a partial copy of a move no source knows")
                )
            else:
                results.append(Recovery(bucket_id, None, holder, "left", "a receiving copy and no owner: inspect"))
    with contextlib.suppress(StoreError):
        await store.refresh_bucket_map()
    return results


async def _owners(store: FeatureStore) -> dict[int, int]:
    with contextlib.suppress(StoreError):
        return await store.refresh_bucket_map()
    return {}


async def _settle(
    store: FeatureStore, bucket_id: int, source: int, status: str, destination: int | None, move_id: str | None
) -> Recovery:
    source_rs = store.replicasets[source]
    target_rs = store.replicasets.get(destination) if destination is not None else None
    if target_rs is None:
        return Recovery(bucket_id, source, destination, "left", "the destination is not in the topology: inspect")
    try:
        # the master's word: a replica behind it would say the move left no trace, and the source would take
        # the bucket back while the destination's master has it active
        state = await target_rs.call("bucket_move_state", [bucket_id, move_id], write=True, timeout=3.0)
    except StoreError as exc:
        return Recovery(bucket_id, source, destination, "left", f"destination unreachable ({exc}); start it, rerun")
    if state["activated"] or (move_id is None and state["status"] == "active"):
        if status == "sending":
            await source_rs.call("bucket_mark_sent", [bucket_id, move_id])
        try:
            await _drop_once_replicated(source_rs, target_rs, bucket_id, move_id)
        except MoveNotReplicated as exc:
            return Recovery(bucket_id, source, destination, "left", str(exc))
        return Recovery(bucket_id, source, destination, "finished", "the destination had activated it")
    if state["status"] == "receiving" and state["move_id"] == move_id:
        if status == "sent" and move_id is not None:
            # every page had been acknowledged, but a destination that failed over since may have lost the last
            # ones with its old master: copy again from the source (idempotent) before activating
            await _copy(source_rs, target_rs, bucket_id, move_id, BUCKET_PAGE)
            try:
                await _sent_replicated(source_rs, bucket_id, move_id, REPLICATION_WAIT_S)
            except SendNotReplicated as exc:
                return Recovery(bucket_id, source, destination, "left", f"{exc}; rerun once its replicas follow")
            await target_rs.call("bucket_activate", [bucket_id, move_id])
            try:
                await _drop_once_replicated(source_rs, target_rs, bucket_id, move_id)
            except MoveNotReplicated as exc:
                return Recovery(bucket_id, source, destination, "left", str(exc))
            return Recovery(bucket_id, source, destination, "resumed", "copied again from the source, activated there")
        await target_rs.call("bucket_discard", [bucket_id])
        await source_rs.call("bucket_cancel_send", [bucket_id])
        return Recovery(bucket_id, source, destination, "rolled back", "the destination held a partial copy")
    if state["status"] is not None and state["status"] != "receiving" and move_id is None:
        return Recovery(bucket_id, source, destination, "left", f"the destination has it {state['status']}: inspect")
    await source_rs.call("bucket_cancel_send", [bucket_id])
    return Recovery(bucket_id, source, destination, "rolled back", "nothing of this move had arrived")
