"""`rtrec failover --replicaset N`: make another instance the master of a replica set without two masters.

1. Fence: a live old master is made read-only first (a planned switchover); a dead one is fenced by the
   record that says it was deposed (the launcher rebootstraps it before it runs again) and, should it come
   back writable anyway, by the replicated mastership record with a newer epoch (it fences itself, clients
   refuse it: lua/mastership.lua, ``feature_store.replicaset.choose_master``).
2. Catch up: the chosen replica (the live one with the most rows) must hold every row that reached any live
   copy: its vclock must cover the component-wise maximum of all live vclocks before it takes writes.
   Replicas in the full mesh pass rows on to each other, so a row that reached one replica reaches it.
3. Promote with a newer epoch, record it for the launcher.

What asynchronous replication can still lose: rows a dead master acknowledged that reached no replica.
Replay the window from a little before the crash (docs/operations.md); writes are idempotent.
"""

from __future__ import annotations

import asyncio
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
        old_alive = old in alive
        if old_alive:
            await connections[old].call("demote", [], timeout=5.0)  # fence before anyone else takes writes
            alive[old] = await stats_of(old) or alive[old]
        candidates = [name for name in alive if name != old]
        if not candidates:
            raise FailoverError(f"replica set {rs_id} has no live replica to promote")
        chosen = max(candidates, key=lambda name: sum(replicated_vclock(alive[name]).values()))
        target: dict[str, int] = {}
        for stats in alive.values():
            for component, lsn in replicated_vclock(stats).items():
                target[component] = max(target.get(component, 0), lsn)
        waited = await _catch_up(stats_of, chosen, target, catch_up_timeout)
        epochs = [int((await connections[name].call("ping", [], timeout=1.0)).get("epoch") or 0) for name in alive]
        epoch = max([record.epoch, *epochs]) + 1
        await connections[chosen].call("promote", [epoch], timeout=10.0)
        deposed = sorted({*record.deposed, old} - {chosen})
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
