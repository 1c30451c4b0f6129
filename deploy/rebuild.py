"""`rtrec rebuild-replica NAME [--force]`: start a replica afresh from its master, its old data directory kept
aside.

A replica whose files are damaged (a torn snapshot, a bad disk) does not start: Tarantool refuses to recover
from a corrupted file, and `rtrec up` stops at it with its log's last lines. A replica's data is a copy of its
master's, so nothing is lost by starting it empty: it joins its master (the whole data set, then the live
stream) and then follows its peers again. Its old directory is renamed ``<name>.rebuilt-<time>`` for
forensics, never deleted, and its old registration is struck from the replica set
(``StoreCluster.forget_replaced``): left there, it would keep its peers' write-ahead logs for a replica that
never comes back, and use up one of the 31 instance ids.

Refused: the recorded master (fail over first; `rtrec up` then rebuilds it as a replica), a master that is not
writable (a failover under way), and, without ``--force``, an instance that runs and answers: stopping it for
the join takes a follower from its master, and with too few following the master refuses client data and
ingest holds (the write lease, lua/mastership.lua).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from deploy import processes
from deploy.cluster import instance_uuid
from deploy.failover import replicated_vclock
from feature_store.errors import StoreError
from feature_store.freshness import covers

if TYPE_CHECKING:
    from deploy.cluster import StoreCluster
    from feature_store.topology import InstanceSpec

JOIN_TIMEOUT_S = 600.0  # a join copies the replica set's whole data set
FORGET_WAIT_S = 10.0


class RebuildRefused(processes.ProcessError):
    """The instance cannot be rebuilt now (the message says why and what to do)."""


async def _checked(cluster: StoreCluster, name: str, force: bool) -> tuple[InstanceSpec, InstanceSpec]:
    """The instance to rebuild and its master, or RebuildRefused."""
    names = [spec.name for spec in cluster.instances()]
    if name not in names:
        raise RebuildRefused(f"there is no instance {name}: the instances are {', '.join(names)}")
    spec = cluster.instance(name)
    rs = cluster.topology[spec.rs_id - 1]
    master = cluster.instance(cluster.master_name(rs))
    if master.name == name:
        raise RebuildRefused(
            f"{name} is the recorded master of replica set {rs.id}: run `rtrec failover --replicaset {rs.id}` "
            "first; `rtrec up` then starts it again as a fresh replica"
        )
    try:
        info = await cluster.call_instance(master, "ping", [], timeout=5.0)
    except StoreError as exc:
        raise RebuildRefused(f"{name} joins its master {master.name}, which does not answer: {exc}") from exc
    if info.get("ro") or info.get("master") not in (None, master.name):
        raise RebuildRefused(f"{master.name} is not a writable master now (a failover under way?): run it again after")
    if not force:
        try:
            await cluster.call_instance(spec, "ping", [], timeout=2.0)
        except StoreError:
            return spec, master
        raise RebuildRefused(
            f"{name} runs and answers: rebuilding stops it for the whole join, and with too few replicas following "
            "its master refuses client data meanwhile (ingest holds). Pass --force to rebuild it anyway"
        )
    return spec, master


async def _wait_joined(cluster: StoreCluster, spec: InstanceSpec, master: InstanceSpec) -> None:
    """Until the instance answers as a replica holding every row its master held when asked."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        try:
            held = await cluster.call_instance(master, "stats", [], timeout=5.0)
            joined = await cluster.call_instance(spec, "stats", [], timeout=5.0)
            if joined["ro"] and covers(replicated_vclock(joined), replicated_vclock(held)):
                return
        except StoreError:
            pass
        if time.monotonic() > deadline:
            raise processes.ProcessError(f"{spec.name} did not catch up with {master.name} in {JOIN_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.2)


async def _forget(cluster: StoreCluster, rs_id: int, old_uuid: str | None) -> list[str]:
    """Strike the old registration. For a few seconds the master's connection to the instance's address is
    still being made again, which looks like a sign of life of the old one; a peer that is down defers it to a
    later `rtrec up` (StoreCluster.forget_replaced)."""
    deadline = time.monotonic() + FORGET_WAIT_S
    while True:
        removed = (await cluster.forget_replaced(cluster.topology[rs_id - 1])).get(rs_id, [])
        if old_uuid is None or old_uuid in removed or time.monotonic() > deadline:
            return removed
        await asyncio.sleep(0.5)


async def rebuild_replica(cluster: StoreCluster, name: str, *, force: bool = False) -> dict[str, Any]:
    spec, master = await _checked(cluster, name, force)
    started = time.monotonic()
    processes.stop(cluster.pid_path(spec))
    directory = cluster.work_dir(spec)
    kept, old_uuid = None, None
    if directory.exists():
        old_uuid = instance_uuid(directory)
        kept = directory.with_name(f"{name}.rebuilt-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}")
        directory.rename(kept)
    if cluster.master_name(cluster.topology[spec.rs_id - 1]) != master.name:  # a failover ran meanwhile
        raise RebuildRefused(f"the master of {name}'s replica set changed while it was stopped: run it again")
    cluster.start_instance(spec)  # no snapshot: it joins its master only
    await cluster.wait_ready(spec, JOIN_TIMEOUT_S)
    rs = cluster.topology[spec.rs_id - 1]
    # then it follows every peer (they have its address already); a peer that is down is not waited for
    await cluster.call_instance(spec, "set_replication", [[cluster.peer_uri(i) for i in rs.instances]], timeout=30)
    await _wait_joined(cluster, spec, master)
    removed = await _forget(cluster, spec.rs_id, old_uuid)
    return {
        "instance": name,
        "joined_from": master.name,
        "old_data_kept_in": str(kept) if kept is not None else None,
        "old_registration_removed": old_uuid if old_uuid in removed else None,
        "seconds": round(time.monotonic() - started, 1),
    }
