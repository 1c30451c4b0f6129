"""A replica whose files are damaged: it does not start, `rtrec up` says which and what to do, and
`rtrec rebuild-replica NAME` (deploy/rebuild.py) starts it afresh from its master, with every row, while its old
directory is kept aside. The master is refused. On a private cluster."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from deploy.cluster import StoreCluster
from deploy.processes import ProcessError
from deploy.rebuild import RebuildRefused, instance_uuid, rebuild_replica
from deploy.settings import Settings
from feature_store.client import FeatureStore
from feature_store.records import Feature


def damage(cluster: StoreCluster, name: str) -> None:
    """Overwrite the middle of the instance's newest snapshot, as a bad disk would."""
    snapshot = max(cluster.work_dir(cluster.instance(name)).glob("*.snap"))
    data = bytearray(snapshot.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * min(4096, len(data) - middle)
    snapshot.write_bytes(bytes(data))


def is_directory(path: str) -> bool:
    return Path(path).is_dir()


async def test_a_damaged_replica_is_rebuilt_from_its_master_with_every_row(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """The other replica is down through it all, and behind the rebuilt one's start when it comes back: the
    rebuilt replica's log begins at its join, so that replica first stops following it (XlogGapError), and
    `rtrec up` wires it again once it caught up from the master."""
    settings, cluster = private_cluster
    rs = cluster.topology[0]
    master = cluster.master_name(rs)
    victim = next(spec.name for spec in rs.instances if spec.name != master)
    other = next(spec.name for spec in rs.instances if spec.name not in (master, victim))
    now = time.time()

    async def write(first: int, count: int) -> None:
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            await store.put_features(
                [
                    Feature(f"{uid}-{i % 300}", "transactions", "tx.out.amount", f"t{i}", 1.0, now)
                    for i in range(first, first + count)
                ]
            )

    await write(0, 6_000)
    await cluster.wait_synced()
    cluster.kill(other, signal.SIGKILL)
    await write(6_000, 2_000)  # the victim still follows: the master takes them (the write lease)
    await cluster.wait_synced(only=cluster.instance(victim))
    cluster.kill(victim, signal.SIGKILL)
    damage(cluster, victim)

    cluster.start_instance(cluster.instance(victim))
    with pytest.raises(ProcessError, match=f"rtrec rebuild-replica {victim}"):  # what `rtrec up` says
        await cluster.wait_ready(cluster.instance(victim), 30)
    with pytest.raises(RebuildRefused, match="rtrec failover --replicaset 1"):
        await rebuild_replica(cluster, master)
    with pytest.raises(RebuildRefused, match="there is no instance storage-9-z"):
        await rebuild_replica(cluster, "storage-9-z")
    old_uuid = instance_uuid(cluster.work_dir(cluster.instance(victim)))
    assert old_uuid is not None

    result = await rebuild_replica(cluster, victim)  # with the other replica still down
    assert result["joined_from"] == master and is_directory(result["old_data_kept_in"])  # kept for forensics
    rows = {
        name: (await cluster.call_instance(cluster.instance(name), "stats", [], timeout=5))["features"]
        for name in (victim, master)
    }
    assert rows[victim] == rows[master] > 0  # the replica set's whole share, joined from the master
    # not struck yet: the other replica, down, may still carry rows of the replica set it has not sent
    assert result["old_registration_removed"] is None and old_uuid in await _registered(cluster, master)
    await write(8_000, 100)  # the master writes again: a replica follows it

    await cluster.start()  # `rtrec up`: the other replica comes back behind the rebuilt one's start
    following = {
        i["name"]: {u["peer"]: u["status"] for u in i["upstreams"]} for i in (await cluster.status())[0]["instances"]
    }
    assert all(status == "follow" for peers in following.values() for status in peers.values()), following
    assert all(len(peers) == 2 for peers in following.values()), following
    assert old_uuid not in await _registered(cluster, master)  # struck by that start, every peer following


async def test_a_replica_that_runs_and_answers_is_rebuilt_only_when_forced(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """Stopping it for the join takes a follower from its master: with the other replica down, its master would
    refuse client data and ingest would hold for the whole join."""
    _, cluster = private_cluster
    rs = cluster.topology[0]
    replica = next(spec.name for spec in rs.instances if spec.name != cluster.master_name(rs))
    with pytest.raises(RebuildRefused, match="runs and answers"):
        await rebuild_replica(cluster, replica)
    result = await rebuild_replica(cluster, replica, force=True)
    assert result["joined_from"] == cluster.master_name(rs) and result["old_registration_removed"]


async def _registered(cluster: StoreCluster, name: str) -> dict[str, int]:
    """UUID -> replica id of every instance the replica set knows, as one copy sees it."""
    stats = await cluster.call_instance(cluster.instance(name), "stats", [], timeout=5)
    return {peer["uuid"]: int(peer["id"]) for peer in stats["replication"].values()}


def _kept_uuid(cluster: StoreCluster, name: str) -> str | None:
    return instance_uuid(max(cluster.base_dir.glob(f"{name}.deposed-*")))


async def test_a_deposed_master_rejoined_leaves_no_registration_and_its_id_serves_again(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """`rtrec up` restarts a deposed master as a fresh replica under a new UUID and strikes the old registration:
    left, it held every peer's write-ahead logs for good. Its id is then free, and the next instance to join takes
    it, with the LSNs the old master wrote under it: that instance, made master in turn, writes on from there."""
    settings, cluster = private_cluster
    rs = cluster.topology[0]
    now = time.time()

    async def write(tag: str) -> None:
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            await store.put_features(
                [Feature(f"{uid}-{i % 50}", "transactions", "a", f"{tag}{i}", 1.0, now) for i in range(1_000)]
            )

    await write("before")
    first = cluster.master_name(rs)
    cluster.kill(first, signal.SIGKILL)
    second = (await cluster.failover(1))["new_master"]
    await cluster.start()  # the deposed master comes back as a fresh replica
    old_uuid = _kept_uuid(cluster, first)
    assert old_uuid is not None and old_uuid not in await _registered(cluster, second)
    await write("between")

    third = next(s.name for s in rs.instances if s.name not in (first, second))
    await rebuild_replica(cluster, third, force=True)  # joins under a new UUID and takes the freed id
    for name in (first, second):  # only the rebuilt one is left to become the master
        cluster.kill(name, signal.SIGKILL)
    assert (await cluster.failover(1))["new_master"] == third
    await cluster.start()
    await write("after")  # the master with the reused id writes on
    await cluster.wait_synced()
    counts = {s.name: (await cluster.call_instance(s, "stats", [], timeout=5))["features"] for s in rs.instances}
    assert len(set(counts.values())) == 1 and min(counts.values()) > 0, counts
    registered = await _registered(cluster, third)
    assert len(registered) == 3 and len(set(registered.values())) == 3, registered


async def test_a_rebuild_waits_for_a_writable_master(private_cluster: tuple[Settings, StoreCluster]) -> None:
    """A master made read-only (a failover's fence, under way) would refuse the join after the replica's directory
    was set aside: the rebuild refuses first, with the replica untouched."""
    _, cluster = private_cluster
    rs = cluster.topology[0]
    master = cluster.instance(cluster.master_name(rs))
    replica = next(spec for spec in rs.instances if spec != master)
    cluster.kill(replica.name, signal.SIGKILL)
    await cluster.call_instance(master, "demote", [], timeout=5)
    with pytest.raises(RebuildRefused, match="not a writable master"):
        await rebuild_replica(cluster, replica.name)
    assert is_directory(str(cluster.work_dir(replica)))  # its data is where it was
