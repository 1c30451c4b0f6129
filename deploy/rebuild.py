"""`rtrec rebuild-replica NAME`: start a replica afresh from its master, its old data directory kept aside.

A replica whose files are damaged (a torn snapshot, a bad disk) does not start: Tarantool refuses to recover
from a corrupted file, and `rtrec up` stops at it with its log's last lines. A replica's data is a copy of its
master's, so nothing is lost by starting it empty: it joins its master (the whole data set, then the live
stream) and then follows the full mesh again. Its old directory is renamed ``<name>.rebuilt-<time>`` for
forensics, never deleted. The recorded master is refused: fail over first, then rebuild the old master as a
replica (a deposed master is rebuilt by `rtrec up` itself).

Until it is back, its replica set has one follower fewer: with both replicas of a replica set of three down
the master refuses client data (the write lease, lua/mastership.lua), so rebuilding one replica resumes
ingest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from deploy import processes
from feature_store.errors import StoreError

if TYPE_CHECKING:
    from deploy.cluster import StoreCluster

JOIN_TIMEOUT_S = 600.0  # a join copies the replica set's whole data set


class RebuildRefused(processes.ProcessError):
    """The instance cannot be rebuilt now: it is the master, or its master does not answer."""


async def rebuild_replica(cluster: StoreCluster, name: str) -> dict[str, Any]:
    spec = cluster.instance(name)
    rs = cluster.topology[spec.rs_id - 1]
    master = cluster.instance(cluster.master_name(rs))
    if master.name == name:
        raise RebuildRefused(
            f"{name} is the recorded master of replica set {rs.id}: run `rtrec failover --replicaset {rs.id}` "
            "first; `rtrec up` then starts it again as a fresh replica"
        )
    try:
        await cluster.call_instance(master, "ping", [], timeout=5.0)
    except StoreError as exc:
        raise RebuildRefused(f"{name} joins its master {master.name}, which does not answer: {exc}") from exc
    started = time.monotonic()
    processes.stop(cluster.pid_path(spec))
    directory = cluster.work_dir(spec)
    kept = None
    if directory.exists():
        kept = directory.with_name(f"{name}.rebuilt-{time.strftime('%Y%m%dT%H%M%S')}")
        directory.rename(kept)
    cluster.start_instance(spec)  # no snapshot: it joins its master only
    await cluster.wait_ready(spec, JOIN_TIMEOUT_S)
    # then it follows every peer (they have its address already); a peer that is down is not waited for
    await cluster.call_instance(spec, "set_replication", [[cluster.peer_uri(i) for i in rs.instances]], timeout=30)
    await cluster.wait_synced(JOIN_TIMEOUT_S, only=spec)
    return {
        "instance": name,
        "joined_from": master.name,
        "old_data_kept_in": str(kept) if kept is not None else None,
        "seconds": round(time.monotonic() - started, 1),
    }
