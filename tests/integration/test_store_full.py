"""A store at its memory limit: what the operator is told to do (docs/operations.md, "the store is out of
memory": shorten TTLs and let expiry free space) must work at the limit itself."""

from __future__ import annotations

import time
from typing import Any

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from feature_store.client import FeatureStore
from feature_store.errors import StoreOutOfMemory
from feature_store.records import Feature
from feature_store.topology import InstanceSpec
from tests.conftest import private_settings


async def _fill(store: FeatureStore, expires_at: float) -> int:
    """Write rows expiring at ``expires_at`` until the store refuses one for lack of memory."""
    written = 0
    for batch in range(1000):
        rows = [
            Feature(f"full-{batch}-{i // 50}", "transactions", "tx.out.amount", f"t{i}", 1.0, 1.7e9, expires_at)
            for i in range(2000)
        ]
        try:
            result = await store.put_features(rows)
        except StoreOutOfMemory:
            return written
        written += result.written
        if result.refused:
            return written
    raise AssertionError("the store never filled")


async def _memory_used(cluster: StoreCluster, master: InstanceSpec) -> float:
    """The instance's slabs in use over its memory limit (what `rtrec status` warns on)."""
    memory = (await cluster.call_instance(master, "stats", [], timeout=5))["memory"]
    return float(memory["arena_used"]) / float(memory["quota_size"])


async def test_expiry_frees_a_store_at_its_memory_limit(kafka_settings: Settings, tmp_path_factory: Any) -> None:
    s = private_settings(
        kafka_settings, tmp_path_factory.mktemp("full"), replicasets=1, instances_per_replicaset=1, memtx_memory_mb=32
    )
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            expires_at = time.time() + 600  # not before the sweep below: the background one leaves them
            written = await _fill(store, expires_at)
            assert written > 10_000
            master = cluster.instance(cluster.master_name(cluster.topology[0]))
            full = await _memory_used(cluster, master)
            assert full > 0.75  # the limit is the quota: slabs of other sizes count towards it too
            # the operator shortened the TTLs: the rows are past their time at the next sweep
            freed = await cluster.call_instance(master, "expire_now", [expires_at + 1], timeout=120)
            assert freed["features"] == written
            assert await _memory_used(cluster, master) < full / 2
            result = await store.put_features([Feature("late", "transactions", "tx.out.amount", "t", 1.0, 1.7e9)])
            assert result.written == 1
    finally:
        cluster.stop()
