"""Health of storage instances read from their ``stats`` procedure: role, memory use, out-of-memory failures,
replication. One interpretation shared by `rtrec status` and the API's store metrics."""

from __future__ import annotations

from typing import Any


def _expiry_facts(expiry: dict[str, Any]) -> dict[str, Any]:
    """Whether the expiry fiber lives and whether its latest pass failed (a master whose passes fail never
    frees the space of expired features: memory grows until writes are refused)."""
    last_ok, last_error_at = expiry.get("last_run_at") or 0, expiry.get("last_error_at")
    return {
        "running": expiry.get("running"),
        "failing": isinstance(last_error_at, int | float) and last_error_at > last_ok,
        "failures": expiry.get("failures", 0),
        "last_error": expiry.get("last_error"),
    }


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
        # the write lease (lua/mastership.lua): a master followed by fewer replicas takes no client data
        "followers": stats.get("followers"),
        "followers_needed": stats.get("followers_needed") or 0,
        "lease_lost": not stats["ro"] and (stats.get("followers") or 0) < (stats.get("followers_needed") or 0),
        "expiry": _expiry_facts(stats.get("expiry") or {}),
        "buckets_active": stats.get("buckets_active"),
        "buckets_sending": stats.get("buckets_sending", 0),
        "buckets_receiving": stats.get("buckets_receiving", 0),
    }
