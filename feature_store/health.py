"""Health of storage instances read from their ``stats`` procedure: role, memory use, out-of-memory failures,
replication. One interpretation shared by `rtrec status` and the API's store metrics."""

from __future__ import annotations

from typing import Any


def instance_facts(stats: dict[str, Any], name_by_port: dict[int, str]) -> dict[str, Any]:
    """Status facts of one answering instance, from its ``stats`` procedure."""
    memory = stats.get("memory") or {}
    quota = memory.get("quota_size") or 0
    failures = stats.get("memory_failures") or {}
    last_at = failures.get("last_at")
    upstreams = []
    for peer in (stats.get("replication") or {}).values():
        upstream = peer.get("upstream") if isinstance(peer, dict) else None
        if not upstream:
            continue
        port = str(upstream.get("peer", "")).rsplit(":", 1)[-1]
        upstreams.append(
            {
                "peer": name_by_port.get(int(port)) if port.isdigit() else upstream.get("peer"),
                "status": upstream.get("status"),
                "lag": upstream.get("lag"),
                "message": upstream.get("message"),
            }
        )
    return {
        "role": "replica" if stats["ro"] else "master",
        "ro": stats["ro"],
        # memory in use by tuples and indexes over the memtx limit (arena_used: slabs in use; quota_used
        # keeps its high-water mark after deletes, so it would not show expiry freeing space)
        "memory_used_ratio": round(memory.get("arena_used", 0) / quota, 4) if quota else None,
        "memory_limit_bytes": quota or None,
        "features": stats.get("features"),
        "memory_failures": {
            "count": failures.get("count", 0),
            "seconds_ago": round(stats["now"] - last_at, 1) if isinstance(last_at, int | float) else None,
            "last": failures.get("last_message"),
        },
        "upstreams": upstreams,
        "buckets_sending": stats.get("buckets_sending", 0),
        "buckets_receiving": stats.get("buckets_receiving", 0),
    }
