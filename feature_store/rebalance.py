"""Moving one bucket between replica sets (vshard's protocol, driven from the client side):

1. the source marks the bucket ``sending``: it refuses writes from now on (writers get WRONG_BUCKET and retry);
2. the records are copied page by page to the destination, which holds the bucket as ``receiving``;
3. the destination activates the bucket; writers refresh their map and land there;
4. the source drops its copy in yielding batches.

Records keep their composite primary key (sequence id, replica set id of origin), so they never collide
with the destination's own records: the field report's lesson about per-shard sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.client import FeatureStore
from feature_store.errors import BucketStateError


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
