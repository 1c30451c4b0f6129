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
from deploy.rebuild import RebuildRefused, rebuild_replica
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
    settings, cluster = private_cluster
    rs = cluster.topology[0]
    master = cluster.master_name(rs)
    victim = next(spec.name for spec in rs.instances if spec.name != master)
    now = time.time()
    async with FeatureStore(settings.store, topology=cluster.topology) as store:
        await store.put_features(
            [Feature(f"{uid}-{i % 300}", "transactions", "tx.out.amount", f"t{i}", 1.0, now - i) for i in range(6_000)]
        )
    await cluster.wait_synced()
    cluster.kill(victim, signal.SIGKILL)
    damage(cluster, victim)

    with pytest.raises(ProcessError, match=f"rtrec rebuild-replica {victim}"):
        await cluster.start()
    with pytest.raises(RebuildRefused, match="rtrec failover --replicaset 1"):
        await rebuild_replica(cluster, master)

    result = await rebuild_replica(cluster, victim)
    assert result["joined_from"] == master and is_directory(result["old_data_kept_in"])  # kept for forensics
    rows = {spec.name: (await cluster.call_instance(spec, "stats", [], timeout=5))["features"] for spec in rs.instances}
    assert rows[victim] == rows[master] > 0  # the replica set's whole share, joined from the master
    await cluster.start()  # and the whole stack starts again
