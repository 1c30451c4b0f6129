"""Moving one bucket between replica sets (vshard's protocol, driven from the client side):

1. the source marks the bucket ``sending``: it refuses writes from now on (writers get WRONG_BUCKET and retry);
2. the records are copied page by page to the destination, which holds the bucket as ``receiving``;
3. the destination activates the bucket; writers refresh their map and land there;
4. the source drops its copy in yielding batches.

Records keep their composite primary key (sequence id, replica set id of origin), so they never collide
with the destination's own records: the field report's lesson about per-shard sequences.

A move that stops half-way (the mover killed, the destination dead) leaves the bucket ``sending`` at the
source, refusing writes; ``recover_moves`` (`rtrec reshard --recover`) finishes or rolls back every such move.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from feature_store.client import FeatureStore
from feature_store.errors import BucketStateError, StoreError

log = logging.getLogger(__name__)


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
    page: int = 2000,
    refresh: bool = True,
) -> MoveResult:
    """Move one bucket. ``refresh=False`` trusts the caller's bucket map (bulk moves refresh once at the end)."""
    if refresh:
        await store.refresh_bucket_map()
    source_rs = store.replicaset_of_bucket(bucket_id)
    if source_rs.id == destination:
        raise BucketStateError(f"bucket {bucket_id} is already on replica set {destination}")
    target_rs = store.replicasets[destination]
    await source_rs.call("bucket_start_send", [bucket_id, destination])
    moved = 0
    after = None
    while True:
        chunk = await source_rs.call("bucket_export", [bucket_id, after, page])
        features = chunk["features"]
        await target_rs.call("bucket_import", [bucket_id, features, chunk.get("extra")])
        moved += len(features)
        if len(features) < page:
            break
        after = [features[-1][0], features[-1][1]]
    await target_rs.call("bucket_activate", [bucket_id])
    await source_rs.call("bucket_drop", [bucket_id])
    if refresh:
        await store.refresh_bucket_map()
    return MoveResult(bucket_id, source_rs.id, destination, moved)


@dataclass(frozen=True)
class Recovery:
    """What ``recover_moves`` did with one bucket found in flight."""

    bucket_id: int
    source: int | None
    destination: int | None
    action: str  # "finished" | "rolled back" | "discarded" | "left"
    reason: str


async def recover_moves(store: FeatureStore) -> list[Recovery]:
    """Settle every bucket a move left in flight (the move process killed, the destination died):

    - the destination activated it: the move had in effect happened, so finish it (drop at the source);
    - the destination holds a partial copy or nothing: roll back (discard the copy, the source takes the
      bucket back and serves writes again);
    - the destination does not answer: leave it and say so (it may have activated the bucket and taken
      writes; start it again and rerun);
    - a partial copy with no sender anywhere: discard it.
    Safe to run at any time no move is running, and twice."""
    transfers = {}
    for rs in store.replicasets.values():
        try:
            transfers[rs.id] = await rs.call("bucket_transfers", [], write=False, timeout=3.0)
        except StoreError as exc:  # its moves are looked at when it answers again
            log.warning("replica set %s not inspected: %s", rs.id, exc)
    results: list[Recovery] = []
    settled: set[tuple[int, int]] = set()
    for source, found in transfers.items():
        for bucket_id, destination in found["sending"]:
            results.append(await _settle(store, bucket_id, source, destination))
            settled.add((destination, bucket_id))
    for holder, found in transfers.items():
        for bucket_id in found["receiving"]:
            if (holder, bucket_id) in settled:
                continue
            await store.replicasets[holder].call("bucket_discard", [bucket_id])
            results.append(Recovery(bucket_id, None, holder, "discarded", "a partial copy with no sender"))
    with contextlib.suppress(StoreError):
        await store.refresh_bucket_map()
    return results


async def _settle(store: FeatureStore, bucket_id: int, source: int, destination: int) -> Recovery:
    source_rs = store.replicasets[source]
    target_rs = store.replicasets.get(destination)
    if target_rs is None:
        await source_rs.call("bucket_cancel_send", [bucket_id])
        return Recovery(bucket_id, source, destination, "rolled back", "the destination is not in the topology")
    try:
        state = await target_rs.call("bucket_state", [bucket_id], write=False, timeout=3.0)
    except StoreError as exc:
        return Recovery(bucket_id, source, destination, "left", f"destination unreachable ({exc}); start it, rerun")
    if state == "active":
        await source_rs.call("bucket_drop", [bucket_id])
        return Recovery(bucket_id, source, destination, "finished", "the destination had activated it")
    if state == "receiving":
        await target_rs.call("bucket_discard", [bucket_id])
    await source_rs.call("bucket_cancel_send", [bucket_id])
    return Recovery(bucket_id, source, destination, "rolled back", f"the destination had it {state or 'not at all'}")
