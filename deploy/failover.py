"""`rtrec failover --replicaset N`: make another instance the master of a replica set without two masters.

1. Fence: every writable instance that answers is made read-only first (a planned switchover, or a stale
   record); a master that does not answer but whose process runs (stalled) is killed; a dead one is fenced by
   the record that says it was deposed (the launcher rebootstraps it before it runs again) and, should it come
   back writable anyway, by the replicated mastership record with a newer epoch (it refuses writes and fences
   itself, clients refuse it: lua/mastership.lua, ``feature_store.replicaset.choose_master``).
2. Catch up: the chosen replica (the live one with the most rows) must hold every row that reached any live
   copy: its vclock must cover the component-wise maximum of all live vclocks before it takes writes.
   Replicas in the full mesh pass rows on to each other, so a row that reached one replica reaches it.
3. Promote with a newer epoch, record it for the launcher. If the chosen replica cannot catch up, the demoted
   master gets its writes back (a replica set without a master is worse than the old one).

What asynchronous replication can still lose: rows a dead master acknowledged that reached no replica.
Replay the window from a little before the crash (docs/operations.md); writes are idempotent.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

from deploy import processes
from deploy.masters import MasterRecord
from feature_store.errors import StoreError
from feature_store.freshness import covers
from feature_store.replicaset import InstanceConnection

if TYPE_CHECKING:
    from deploy.cluster import StoreCluster

CATCH_UP_TIMEOUT_S = 60.0


class FailoverError(processes.ProcessError):
    """No safe promotion: no live replica, or the chosen one did not catch up in time."""


def replicated_vclock(stats: dict[str, Any]) -> dict[str, int]:
    """The vclock components that replicate (component 0 counts local-only changes)."""
    vclock = stats.get("vclock") or {}
    if isinstance(vclock, list):
        vclock = dict(enumerate(vclock, start=1))
    return {str(k): int(v) for k, v in vclock.items() if str(k) != "0"}


async def fail_over(
    cluster: StoreCluster, rs_id: int, *, catch_up_timeout: float = CATCH_UP_TIMEOUT_S
) -> dict[str, Any]:
    if not 1 <= rs_id <= len(cluster.topology):  # topology[-1] would have failed the last one over
        raise FailoverError(f"no replica set {rs_id}: the cluster has replica sets 1 to {len(cluster.topology)}")
    rs = cluster.topology[rs_id - 1]
    record = cluster.master_record(rs)
    old = record.master
    settings = cluster.store
    connections = {
        spec.name: InstanceConnection(spec, settings.user, settings.password, connect_timeout=0.5)
        for spec in rs.instances
    }

    async def stats_of(name: str) -> dict[str, Any] | None:
        try:
            return await connections[name].call("stats", [], timeout=1.0)  # type: ignore[no-any-return]
        except StoreError:
            return None

    try:
        alive = {name: s for name in connections if (s := await stats_of(name)) is not None}
        await _hear_every_running_replica(cluster, connections, alive, old)
        old_alive = old in alive
        if not old_alive and _process_alive(cluster, old):
            # the master does not answer but its process runs (stalled, partitioned): it could wake up and take
            # writes, so it is stopped for good before anyone else is promoted (fencing by kill)
            cluster.kill(old, signal.SIGKILL)
        # fence every writable instance, not only the recorded master (the record may be stale)
        demoted = [name for name, stats in alive.items() if not stats.get("ro", True)]
        epoch = record.epoch + 1
        try:
            for name in demoted:
                await connections[name].call("demote", [], timeout=5.0)
                alive[name] = await stats_of(name) or alive[name]
            # newer than any the instances hold: a give-back after an earlier try raised theirs past masters.json's
            epoch = max([record.epoch, *[await _epoch_of(connections[name]) for name in alive]]) + 1
            candidates = [name for name in alive if name != old]
            if not candidates:
                raise FailoverError(f"replica set {rs_id} has no live replica to promote")
            chosen = max(candidates, key=lambda name: sum(replicated_vclock(alive[name]).values()))
            target: dict[str, int] = {}
            for stats in alive.values():
                for component, lsn in replicated_vclock(stats).items():
                    target[component] = max(target.get(component, 0), lsn)
            waited = await _catch_up(stats_of, chosen, target, catch_up_timeout)
        except (FailoverError, StoreError):
            await _restore(connections, demoted, epoch)  # no master is worse than the old one
            raise
        await connections[chosen].call("promote", [epoch], timeout=10.0)
        deposed = sorted({*record.deposed, old, *demoted} - {chosen})
        cluster.masters.put(rs_id, MasterRecord(chosen, epoch, deposed))
        return {
            "replicaset": rs_id,
            "old_master": old,
            "old_master_alive": old_alive,
            "new_master": chosen,
            "epoch": epoch,
            "caught_up_in_s": round(waited, 3),
            "vclock": target,
        }
    finally:
        await asyncio.gather(*(conn.close() for conn in connections.values()))


async def _hear_every_running_replica(
    cluster: StoreCluster, connections: dict[str, InstanceConnection], alive: dict[str, Any], old: str
) -> None:
    """A replica whose process runs but did not answer (busy under ingest) may hold rows of the old master the
    others lack: promoting another one would leave the two copies diverging. Ask it again with more time; if it
    still does not answer, stop, and say what to do (the old master itself, stalled, is fenced by a kill)."""
    silent = [name for name in connections if name not in alive and name != old and _process_alive(cluster, name)]
    for name in silent:
        for _ in range(3):
            try:
                alive[name] = await connections[name].call("stats", [], timeout=5.0)
                break
            except StoreError:
                continue
        else:
            raise FailoverError(
                f"{name} runs but does not answer: it may hold writes the other copies lack. Wait for it, or stop "
                "it (it rejoins as a replica later), then run the failover again"
            )


def _process_alive(cluster: StoreCluster, name: str) -> bool:
    return processes.is_alive(processes.read_pid(cluster.pid_path(cluster.instance(name))))


async def _epoch_of(connection: InstanceConnection) -> int:
    """The mastership epoch an instance holds; 0 when it does not answer (the master's record, replicated,
    is the one that counts, and the give-back asks its own instance again)."""
    try:
        return int((await connection.call("ping", [], timeout=2.0)).get("epoch") or 0)
    except StoreError:
        return 0


async def _restore(connections: dict[str, InstanceConnection], demoted: list[str], epoch: int) -> None:
    """Give the writes back to the instance that had them (the first demoted one), with an epoch newer than
    both ``epoch`` and the one it holds itself (which it checks)."""
    if demoted:
        own = await _epoch_of(connections[demoted[0]])
        await connections[demoted[0]].call("promote", [max(epoch, own) + 1], timeout=10.0)


async def _catch_up(stats_of: Any, chosen: str, target: dict[str, int], timeout: float) -> float:
    """Wait until ``chosen`` holds every row of ``target``; returns the seconds waited."""
    started = time.monotonic()
    while True:
        stats = await stats_of(chosen)
        if stats is not None and covers(replicated_vclock(stats), target):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            behind = replicated_vclock(stats) if stats else "unreachable"
            raise FailoverError(f"{chosen} did not catch up with {target} in {timeout:.0f}s (it has {behind})")
        await asyncio.sleep(0.05)
