"""The write lease (lua/mastership.lua): a master takes client data only while a replica follows it.

The fault it closes: a master cut off from its replicas but still reached by the consumers kept taking writes
for the whole partition, while the replicas, following each other, looked fresh to an API that could not reach
the master, and never got those writes: an application missed, its product offered. Drills on private
clusters: the replicas cut off from the master (they follow only each other, as in a partition), and the
replicas killed."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

from deploy.cluster import StoreCluster
from deploy.problems import Thresholds, store_problems
from deploy.settings import Settings
from feature_store.client import FeatureStore
from feature_store.errors import NoFollowingReplica
from feature_store.freshness import CopyRead, trusted_copy
from feature_store.records import Feature
from feature_store.specs import AggregateSpec
from feature_store.topology import InstanceSpec, ReplicaSetSpec
from tests.conftest import private_settings
from tests.integration.kafka_helpers import wait_for

LEASE_DEADLINE_S = 15.0  # the relays notice a silent peer in about 4 s; slack for a loaded machine
APPLICATIONS = AggregateSpec("count", "application.status")  # one row per product applied for


def application(subject: str, product: str) -> Feature:
    return Feature(subject, "applications", "application.status", product, "submitted", time.time() - 60)


def client_of(store: FeatureStore, rs: ReplicaSetSpec, prefix: str, *, other: bool = False) -> str:
    """A subject whose bucket ``rs`` owns (``other``: one it does not)."""
    return next(
        subject
        for subject in (f"{prefix}-{i}" for i in range(10_000))
        if (store.replicaset_of_bucket(store.bucket_id_for(subject)).id == rs.id) != other
    )


async def writes_refused(store: FeatureStore, subject: str, accepted: list[str] | None = None) -> bool:
    """Whether the master refuses an application of ``subject`` for want of following replicas; one it takes is
    a new product each time, named in ``accepted``."""
    product = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        await store.put_features([application(subject, product)])
    except NoFollowingReplica:
        return True
    if accepted is not None:
        accepted.append(product)
    return False


async def read_copy(cluster: StoreCluster, store: FeatureStore, spec: InstanceSpec, subject: str) -> CopyRead:
    """One copy's answer to the API's read of ``subject``, with its freshness."""
    args = [store.bucket_id_for(subject), subject, time.time(), [APPLICATIONS.wire], True]
    return CopyRead.from_wire(spec.name, await cluster.call_instance(spec, "client_read", args, timeout=2))


async def set_peers(cluster: StoreCluster, settings: Settings, spec: InstanceSpec, peers: list[InstanceSpec]) -> None:
    uris = [f"{settings.store.user}:{settings.store.password}@{peer.uri}" for peer in peers]
    await cluster.call_instance(spec, "set_replication", [uris], timeout=10)


def first_replicaset(
    private_cluster: tuple[Settings, StoreCluster],
) -> tuple[Settings, StoreCluster, ReplicaSetSpec, InstanceSpec]:
    """The private cluster's settings, itself, its first replica set and that replica set's master."""
    settings, cluster = private_cluster
    rs = cluster.topology[0]
    return settings, cluster, rs, cluster.instance(cluster.master_name(rs))


async def test_a_master_cut_off_from_its_replicas_takes_no_writes_they_would_miss(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    settings, cluster, rs, master = first_replicaset(private_cluster)
    replicas = [spec for spec in rs.instances if spec != master]
    async with FeatureStore(settings.store, topology=cluster.topology) as store:
        client = client_of(store, rs, uid)
        await store.put_features([application(client, "deposit")])
        await cluster.wait_replication(10)

        # the partition: each replica follows only the other one; the master still answers its writers
        for replica in replicas:
            await set_peers(cluster, settings, replica, [r for r in replicas if r != replica])
        taken: list[str] = []  # before the master noticed (its relays see the replicas go): like a master's death
        await wait_for(
            lambda: writes_refused(store, client, taken), timeout=LEASE_DEADLINE_S, what="the master to refuse"
        )
        for _ in range(5):  # and from then on it takes nothing, however long the partition lasts
            await asyncio.sleep(0.3)
            assert await writes_refused(store, client, taken)
        instances = await cluster.status()
        assert next(i for i in instances[0]["instances"] if i["name"] == master.name)["lease_lost"]
        assert any(
            "0 of the 1 replicas it needs" in p for p in store_problems({"replicasets": instances}, Thresholds())
        )

        # the copy the API would trust misses at most what the master took before it noticed; nothing after
        on_master = (await read_copy(cluster, store, master, client)).values
        assert on_master == [1 + len(taken)]
        trusted = trusted_copy([await read_copy(cluster, store, r, client) for r in replicas])
        assert trusted is not None and 1 <= trusted.values[0] <= on_master[0]

        # the partition heals: writes pass again and reach the replicas
        for replica in replicas:
            await set_peers(cluster, settings, replica, list(rs.instances))
        await wait_for(lambda: _passes(store, client), timeout=LEASE_DEADLINE_S, what="writes to pass again")
        await cluster.wait_replication(10)
        healed = trusted_copy([await read_copy(cluster, store, r, client) for r in replicas])
        assert healed is not None and healed.values == [on_master[0] + 1]  # the one write after healing too


async def test_a_master_whose_replicas_died_holds_writes_until_one_is_back(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    settings, cluster, rs, master = first_replicaset(private_cluster)
    async with FeatureStore(settings.store, topology=cluster.topology) as store:
        client, elsewhere = client_of(store, rs, uid), client_of(store, rs, uid, other=True)
        for spec in rs.instances:
            if spec != master:
                cluster.kill(spec.name, signal.SIGKILL)
        await wait_for(lambda: writes_refused(store, client), timeout=LEASE_DEADLINE_S, what="the master to refuse")
        await store.put_features([application(elsewhere, "deposit")])  # the other replica set is not held
        await cluster.start()  # the replicas come back from their snapshots and follow again
        await wait_for(lambda: _passes(store, client), timeout=LEASE_DEADLINE_S, what="writes to pass again")


async def _passes(store: FeatureStore, subject: str) -> bool:
    return not await writes_refused(store, subject)


async def test_replicas_that_stop_answering_without_closing_their_sockets_end_the_lease(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """A partition that drops packets closes no socket: the master finds its replicas silent by its relays'
    timeout, and refuses from then on. Stalled replicas (SIGSTOP) are silent the same way."""
    settings, cluster, rs, master = first_replicaset(private_cluster)
    stalled = [spec.name for spec in rs.instances if spec != master]
    async with FeatureStore(settings.store, topology=cluster.topology) as store:
        client = client_of(store, rs, uid)
        for name in stalled:
            cluster.kill(name, signal.SIGSTOP)
        try:
            started = time.monotonic()
            await wait_for(lambda: writes_refused(store, client), timeout=LEASE_DEADLINE_S, what="the master to refuse")
            refused_after = time.monotonic() - started
        finally:
            for name in stalled:
                cluster.kill(name, signal.SIGCONT)
        assert refused_after > 1.0  # a replica silent for a heartbeat or two is not yet given up
        await wait_for(lambda: _passes(store, client), timeout=LEASE_DEADLINE_S, what="writes to pass again")


async def test_a_master_with_its_only_replica_down_keeps_writing(settings: Settings, tmp_path: Path, uid: str) -> None:
    """With one replica there is no pair to follow each other: a lone replica cut off follows nobody and is never
    trusted, so the lease asks for no follower and the master's writes go on (store.followers_needed)."""
    pair = private_settings(settings, tmp_path, replicasets=1, instances_per_replicaset=2)
    cluster = StoreCluster(pair)
    await cluster.start()
    try:
        rs = cluster.topology[0]
        replica = next(spec for spec in rs.instances if spec.name != cluster.master_name(rs))
        async with FeatureStore(pair.store, topology=cluster.topology) as store:
            cluster.kill(replica.name, signal.SIGKILL)
            client = client_of(store, rs, uid)
            for product in ("deposit", "mortgage"):
                await store.put_features([application(client, product)])
                await asyncio.sleep(1.0)
    finally:
        cluster.stop()
