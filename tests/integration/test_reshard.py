"""Adding a replica set while ingest runs: buckets move, writers follow, nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from deploy.cluster import StoreCluster
from deploy.settings import TOPICS, Settings
from extractors.consumer import ExtractorConsumer
from extractors.decode import validate_event
from extractors.extract import ExtractionConfig, extract
from extractors.ops import apply_ops
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from feature_store.fake import InMemoryFeatureStore
from feature_store.specs import parse_view
from tests.conftest import free_port_block


@pytest.fixture
async def two_replicasets(
    kafka_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, StoreCluster]]:
    s = kafka_settings.model_copy(
        update={
            "run_dir": tmp_path_factory.mktemp("reshard"),
            "store": kafka_settings.store.model_copy(update={"base_port": free_port_block(40), "replicasets": 2}),
        }
    )
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        yield s, cluster
    finally:
        StoreCluster(s).stop()  # a fresh object: it reads the grown replica set count


async def test_adding_a_replicaset_under_load_keeps_every_record(
    two_replicasets: tuple[Settings, StoreCluster],
    uid: str,
) -> None:
    s, cluster = two_replicasets
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

        reference = InMemoryFeatureStore()
        config = ExtractionConfig(home_currency=s.consumer.home_currency)
        for topic_key, _, payload in events:
            await apply_ops(reference, extract(validate_event(TOPICS[topic_key], payload), config))
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
