"""Adding a replica set while ingest runs: buckets move, writers follow, nothing is lost or duplicated."""

from __future__ import annotations

import asyncio

import pytest

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.consumer import ExtractorConsumer
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from feature_store.specs import parse_view
from tests.conftest import reference_state


async def test_adding_a_replicaset_under_load_keeps_every_record(
    private_cluster: tuple[Settings, StoreCluster],
    uid: str,
) -> None:
    s, cluster = private_cluster
    events = list(BankSimulator(SimulationConfig(clients=40, days=90, seed=29, client_prefix=f"{uid}r")).events())
    subjects = sorted({key for _, key, _ in events})
    await publish_events(s, events, progress=False)

    async with FeatureStore(s.store, topology=cluster.topology) as store:
        consumer = ExtractorConsumer(s, store)  # knows two replica sets; must find the third by itself
        ingest = asyncio.create_task(consumer.run(idle_exit_s=4.0))
        while consumer.stats.features_written < 3000 and not ingest.done():
            await asyncio.sleep(0.01)
        result = await cluster.add_replicaset(concurrency=4)
        stats = await asyncio.wait_for(ingest, timeout=300)
        assert stats.messages == len(events)
        assert result["replicaset"] == 3 and result["buckets_moved"] == 1000

        await store.refresh_bucket_map()
        owners = store.bucket_map
        assert len(owners) == s.store.bucket_count
        assert sorted({rs for rs in owners.values()}) == [1, 2, 3]
        assert sum(1 for rs in owners.values() if rs == 3) == 1000

        reference = await reference_state(s, events)
        view = parse_view(s.views["client_profile"])
        total = 0
        for subject in subjects:
            rows = await store.get_features(subject, limit=100_000)
            total += len(rows)
            assert {(r.source, r.name, r.object, r.value, r.time_use) for r in rows} == reference.snapshot(subject)
            assert len({(r.id, r.rs_id) for r in rows}) == len(rows)
        # the total record count across all three replica sets equals the reference: no loss, no duplicate
        stored = sum(
            inst["features"]
            for rs in (await store.stats()).values()
            for name, inst in rs.items()
            if not inst.get("ro", True)
        )
        assert stored == total == sum(len(reference.snapshot(x)) for x in subjects)
        now = max(float(p["ts"]) for _, _, p in events)
        for subject in subjects[:5]:
            got, want = await store.aggregate(subject, view, now), await reference.aggregate(subject, view, now)
            for g, w in zip(got, want, strict=True):
                assert g == (pytest.approx(w) if isinstance(w, float) else w)
