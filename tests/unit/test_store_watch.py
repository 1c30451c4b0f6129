"""The API's store gauges: an instance that stops answering is not left counted as a writable master."""

from __future__ import annotations

from typing import Any

from manager.store_watch import LEASE_LOST, WRITABLE, StoreWatch


def master_stats(**overrides: Any) -> dict[str, Any]:
    return {
        "ro": False,
        "features": 10,
        "memory": {"arena_used": 1, "quota_size": 100},
        "replication": {},
        "followers": 0,
        "followers_needed": 1,
        "now": 1.0,
        **overrides,
    }


def test_a_master_that_stops_answering_is_no_longer_counted_writable() -> None:
    watch = StoreWatch(store=None)  # type: ignore[arg-type]  # _publish reads no store
    problems = watch._publish("9", "s-9-a", master_stats(), {})
    assert WRITABLE.labels("9", "s-9-a")._value.get() == 1
    assert LEASE_LOST.labels("9", "s-9-a")._value.get() == 1
    assert any("too few replicas follow it" in p for p in problems)
    watch._publish("9", "s-9-a", {"error": "connection refused"}, {})
    assert WRITABLE.labels("9", "s-9-a")._value.get() == 0  # RtrecStoreNoMaster sums these per replica set
    assert LEASE_LOST.labels("9", "s-9-a")._value.get() == 0
