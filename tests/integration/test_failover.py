"""Failover without two masters, on private clusters (the shared one keeps its masters):

- SIGKILL of a master during ingest: failover promotes a caught-up replica, the consumer finds the new master
  without a restart, a replay of the outage window recovers what the dead master acknowledged but never
  replicated, and the old master, restarted, comes back as a replica of the new one (rebootstrapped);
- a planned switchover under writes fences the live old master before the new one takes writes;
- an old master started writable by mistake fences itself, and clients never write to it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import pytest

from deploy import processes
from deploy.cluster import StoreCluster
from deploy.masters import MasterRecord
from deploy.settings import Settings
from extractors.consumer import ExtractorConsumer
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from feature_store.errors import StoreError
from feature_store.records import Feature
from feature_store.topology import InstanceSpec
from replay.runner import ReplayJob
from tests.conftest import reference_state
from tests.integration.kafka_helpers import wait_for


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
        await wait_for(lambda: _gone(cluster, victim.name), timeout=10, what="the master to be dead")
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
    assert result["epoch"] == 2 and set(result["vclock"])  # caught up with what reached any replica

    # the old master runs again: rebootstrapped from the new master, read-only, following it
    await cluster.start()
    await cluster.wait_replication()
    await cluster.wait_synced()
    pings = {
        spec.name: await cluster.call_instance(spec, "ping", [], timeout=2) for spec in cluster.topology[0].instances
    }
    assert [name for name, ping in pings.items() if not ping["ro"]] == [result["new_master"]]
    assert pings[victim.name]["master"] == result["new_master"] and pings[victim.name]["epoch"] == 2
    assert list(cluster.base_dir.glob(f"{victim.name}.deposed-*"))  # its old data kept aside, not reused
    counts = {
        spec.name: (await cluster.call_instance(spec, "stats", [], timeout=2))["features"]
        for spec in cluster.topology[0].instances
    }
    assert len(set(counts.values())) == 1, counts  # the returned old master holds exactly the new master's data


async def _gone(cluster: StoreCluster, name: str) -> bool:
    return not processes.is_alive(processes.read_pid(cluster.pid_path(cluster.instance(name))))


async def _answers(cluster: StoreCluster, spec: InstanceSpec) -> bool:
    try:
        await cluster.call_instance(spec, "ping", [], timeout=1)
    except StoreError:
        return False
    return True


async def _writable(cluster: StoreCluster, rs_index: int = 0) -> list[str]:
    pings = [
        (spec.name, await cluster.call_instance(spec, "ping", [], timeout=2))
        for spec in cluster.topology[rs_index].instances
    ]
    return [name for name, ping in pings if not ping["ro"]]


async def test_a_planned_switchover_under_writes_fences_the_old_master_first_and_loses_nothing(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    s, cluster = private_cluster
    written: list[str] = []
    stop = asyncio.Event()

    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject = next(
            f"{uid}-{i}" for i in range(1000) if store.replicaset_of_bucket(store.bucket_id_for(f"{uid}-{i}")).id == 1
        )

        async def keep_writing() -> None:
            n = 0
            while not stop.is_set():
                tx = f"{uid}-tx{n}"
                await store.put_features([Feature(subject, "transactions", "tx.out.amount", tx, 1.0, time.time())])
                written.append(tx)
                n += 1

        writer = asyncio.create_task(keep_writing())
        while len(written) < 50:
            await asyncio.sleep(0.01)
        old = cluster.master_name(cluster.topology[0])
        result = await cluster.failover(1)
        assert result["old_master_alive"] and result["old_master"] == old
        assert await _writable(cluster) == [result["new_master"]]
        count_at_switch = len(written)
        while len(written) < count_at_switch + 50:  # writes go on through the new master
            await asyncio.sleep(0.01)
        stop.set()
        await writer
        await cluster.wait_synced()
        stored = {r.object for r in await store.get_features(subject, limit=100_000)}
    assert stored == set(written)  # every acknowledged write is there, on the new master


async def test_an_old_master_started_writable_by_mistake_fences_itself(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    s, cluster = private_cluster
    old = cluster.topology[0].bootstrap_master
    await cluster.wait_synced()
    cluster.kill(old.name, signal.SIGKILL)
    result = await cluster.failover(1)
    # an operator error: the launcher's record is rolled back, so the old master starts writable on its old data
    cluster.masters.put(1, MasterRecord(old.name, 1, []))
    cluster.start_instance(old)
    await wait_for(lambda: _answers(cluster, old), timeout=30, what="the old master to run")
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        # clients write to the recorded master of the newest epoch, never to the old one
        chosen = await store.replicasets[1].discover_master()
        assert chosen.spec.name == result["new_master"]

    async def fenced() -> bool:
        return await _writable(cluster) == [result["new_master"]]

    await wait_for(fenced, timeout=20, what="the old master to step down")  # it heard the newer record
    refused = await cluster.call_instance(old, "ping", [], timeout=2)
    assert refused["master"] == result["new_master"] and refused["epoch"] == result["epoch"]


async def test_a_failover_with_no_live_replica_leaves_the_master_writable_however_often_it_is_tried(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """The master is demoted to fence it, then given its writes back when no replica can take over. The second
    try promoted it with the epoch recorded before the first, which the master refused as not newer: the replica
    set was left with no master (and the command ended in a traceback)."""
    from deploy.failover import FailoverError

    _, cluster = private_cluster
    rs = cluster.topology[0]
    master = cluster.instance(cluster.master_name(rs))
    for spec in rs.instances:
        if spec != master:
            cluster.kill(spec.name, signal.SIGKILL)
    for _ in range(3):
        with pytest.raises(FailoverError, match="no live replica"):
            await cluster.failover(1)
        assert not (await cluster.call_instance(master, "ping", [], timeout=2))["ro"]


async def test_a_client_leaves_a_master_that_stopped_answering_for_the_one_promoted_after_it(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """A master whose host vanished keeps its socket open: calls to it time out, and the client kept it as the
    master, so every call waited on it even after a replica had been promoted (only a lost connection made it
    ask again). Here the old master is stopped, not killed, as failover cannot kill a process on another host."""
    import os

    from feature_store.errors import StoreTimeout

    s, cluster = private_cluster
    rs_spec = cluster.topology[0]
    old = cluster.instance(cluster.master_name(rs_spec))
    new = next(spec for spec in rs_spec.instances if spec != old)
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        rs = store.replicasets[rs_spec.id]
        assert (await rs.call("ping", [], timeout=2.0))["ro"] is False and rs.master_name == old.name
        pid = processes.read_pid(cluster.pid_path(old))
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreTimeout):
                await rs.call("ping", [], timeout=0.5)
            assert rs.master_name == old.name  # still the master known: a loaded one would answer later
            epoch = int((await cluster.call_instance(new, "ping", [], timeout=2)).get("epoch") or 0) + 1
            await cluster.call_instance(new, "promote", [epoch], timeout=10)
            answered = None
            deadline = time.monotonic() + 10
            while answered is None and time.monotonic() < deadline:  # the next look finds the promoted one
                with contextlib.suppress(StoreTimeout):
                    answered = await rs.call("ping", [], timeout=0.5)
            assert answered is not None and answered["ro"] is False and rs.master_name == new.name
        finally:
            os.kill(pid, signal.SIGCONT)


async def test_requests_shorter_than_a_discovery_still_find_the_master(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """With one copy stalled, asking every copy who the master is takes a second (its ping times out). Each
    request of half a second cancelled the discovery it started: none finished, and the replica set was served
    degraded until something else found the master. Callers now share one discovery that outlives them."""
    import os

    s, cluster = private_cluster
    rs_spec = cluster.topology[0]
    master = cluster.master_name(rs_spec)
    stalled = next(spec for spec in rs_spec.instances if spec.name != master)
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        rs = store.replicasets[rs_spec.id]
        pid = processes.read_pid(cluster.pid_path(stalled))
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            rs.forget_master()  # as after a master that timed out
            answered = None
            deadline = time.monotonic() + 10
            while answered is None and time.monotonic() < deadline:
                try:
                    answered = await asyncio.wait_for(rs.call("ping", [], timeout=0.3), 0.3)
                except (TimeoutError, StoreError):
                    continue
            assert answered is not None and answered["ro"] is False and rs.master_name == master
        finally:
            os.kill(pid, signal.SIGCONT)


async def test_a_failover_waits_for_a_running_replica_that_does_not_answer_or_says_why_not(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """A replica busy past the 1-second question was left out: the other one was promoted though the silent one
    might hold rows of the dead master the promoted one lacked, and the copies diverged."""
    import os

    from deploy.failover import FailoverError

    _, cluster = private_cluster
    rs_spec = cluster.topology[0]
    master = cluster.master_name(rs_spec)
    silent = next(spec for spec in rs_spec.instances if spec.name != master)
    pid = processes.read_pid(cluster.pid_path(silent))
    assert pid is not None
    cluster.kill(master, signal.SIGKILL)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(FailoverError, match=f"{silent.name} runs but does not answer"):
            await cluster.failover(1)
    finally:
        os.kill(pid, signal.SIGCONT)
    result = await cluster.failover(1)  # it answers now: it is among the candidates
    assert result["new_master"] != master
