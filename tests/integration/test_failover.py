"""SIGKILL of a master during ingest: failover promotes a replica, the consumer finds the new master without a
restart, and a replay of the outage window recovers what the dead master acknowledged but never replicated.
Runs on a private cluster so the shared one keeps its masters."""

from __future__ import annotations

import asyncio
import signal
import time

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.consumer import ExtractorConsumer
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from replay.runner import ReplayJob
from tests.conftest import reference_state


async def test_master_killed_during_ingest_failover_and_replay_lose_nothing(
    private_cluster: tuple[Settings, StoreCluster],
    uid: str,
) -> None:
    s, cluster = private_cluster
    events = list(BankSimulator(SimulationConfig(clients=24, days=90, seed=23, client_prefix=f"{uid}f")).events())
    subjects = sorted({key for _, key, _ in events})
    window_start = time.time()
    await publish_events(s, events, progress=False)
    window_end = time.time() + 1

    async with FeatureStore(s.store, topology=cluster.topology) as store:
        consumer = ExtractorConsumer(s, store)
        running = asyncio.create_task(consumer.run(idle_exit_s=4.0))
        victim = cluster.topology[0].bootstrap_master
        victim_rs = store.replicasets[1]
        # kill the master of replica set 1 while the stream is landing
        while not running.done() and consumer.stats.features_written < 2000:
            await asyncio.sleep(0.01)
        written_before_kill = consumer.stats.features_written
        cluster.kill(victim.name, signal.SIGKILL)
        await asyncio.sleep(0.5)
        result = await cluster.failover(1)
        assert result["old_master"] == victim.name and not result["old_master_alive"]
        stats = await asyncio.wait_for(running, timeout=240)
        assert stats.messages == len(events)
        # the kill happened mid-stream; the store client's own retry loop rode out the switch
        assert 0 < written_before_kill < stats.features_written
        assert (await victim_rs.discover_master()).spec.name == result["new_master"]

        # whatever the dead master acknowledged but never replicated comes back from Kafka
        job = await ReplayJob(s, store, window_start - 1, window_end).run()
        assert job.state == "done", job.error

        reference = await reference_state(s, events)
        for subject in subjects:
            rows = await store.get_features(subject, limit=100_000)
            got = {(r.source, r.name, r.object, r.value, r.time_use) for r in rows}
            assert got == reference.snapshot(subject), subject
    assert cluster.master_name(cluster.topology[0]) == result["new_master"]
