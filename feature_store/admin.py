"""Operations on the store as a whole, apart from the data path: bucket bootstrap, per-instance statistics,
removing a "fat" subject. Used by the launcher, status and ops tools (with the operations user)."""

from __future__ import annotations

import asyncio
from typing import Any

from feature_store.buckets import even_bucket_ranges
from feature_store.client import FeatureStore


async def bootstrap_buckets(store: FeatureStore) -> bool:
    """Assign all buckets evenly when no replica set owns any (a new cluster). Returns True if it did."""
    if await store.refresh_bucket_map():
        return False
    ids = sorted(store.replicasets)
    assignment = even_bucket_ranges(store.settings.bucket_count, ids)
    await asyncio.gather(*(store.replicasets[rs].call("bucket_assign", [b]) for rs, b in assignment.items()))
    await store.refresh_bucket_map()
    return True


async def store_stats(store: FeatureStore) -> dict[int, dict[str, Any]]:
    """Per replica set, per instance storage statistics (unreachable instances show their error)."""
    results = await asyncio.gather(*(rs.call_each("stats", []) for rs in store.replicasets.values()))
    return dict(zip(store.replicasets, results, strict=True))


async def purge_subject(store: FeatureStore, subject: str) -> int:
    """Delete every feature of ``subject`` (in yielding batches on the storage): the cure for a fat subject."""
    answer = await store.call_routed(subject, "purge_subject", [subject], write=True)
    return int(answer["deleted"])
