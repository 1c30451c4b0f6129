"""The API's view of the store's health: every ``interval_s`` it asks every instance for its statistics and
publishes them as Prometheus gauges (so alert rules see a store near its memory limit, an instance down, a
replica not following) and keeps the problems for ``/ready``. Runs beside the requests; a failing round is
logged and the next one tries again."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Gauge

from feature_store.admin import store_stats
from feature_store.client import FeatureStore
from feature_store.health import instance_facts

log = logging.getLogger(__name__)

INSTANCE = ["replicaset", "instance"]


def _gauge(name: str, documentation: str, labels: list[str]) -> Gauge:
    """Every API worker watches the same store: with several workers, /metrics shows the latest value set."""
    return Gauge(name, documentation, labels, multiprocess_mode="mostrecent")


UP = _gauge("rtrec_store_instance_up", "1 when the storage instance answered the last health round", INSTANCE)
WRITABLE = _gauge("rtrec_store_instance_writable", "1 for a writable instance (a master)", INSTANCE)
MEMORY_USED = _gauge("rtrec_store_memory_used_ratio", "Memory in use over the memtx limit", INSTANCE)
MEMORY_FAILURES = _gauge(
    "rtrec_store_memory_failures", "Writes refused for lack of memory since the instance started", INSTANCE
)
FEATURES = _gauge("rtrec_store_features", "Features stored on the instance", INSTANCE)
LEASE_LOST = _gauge(
    "rtrec_store_write_lease_lost", "1 for a master followed by too few replicas: it refuses client data", INSTANCE
)
FOLLOWING = _gauge("rtrec_store_replication_following", "1 when the instance follows the peer", [*INSTANCE, "peer"])
REPLICATION_LAG = _gauge("rtrec_store_replication_lag_seconds", "Replication lag behind the peer", [*INSTANCE, "peer"])

MEMORY_WARNING_RATIO = 0.8


class StoreWatch:
    def __init__(self, store: FeatureStore, interval_s: float = 10.0) -> None:
        self.store = store
        self.interval_s = interval_s
        self.problems: list[str] = []
        self.first_round_done = asyncio.Event()

    async def run(self) -> None:
        """A round now (bounded, so a dead store cannot delay startup), then one every ``interval_s``."""
        first = True
        while True:
            try:
                await asyncio.wait_for(self.check_once(), timeout=self.interval_s)
            except Exception as exc:  # a health round must never end the watch
                log.warning("store health round failed: %s", exc)
            if first:
                self.first_round_done.set()
                first = False
            await asyncio.sleep(self.interval_s)

    async def check_once(self) -> list[str]:
        name_by_port = {i.spec.port: i.spec.name for rs in self.store.replicasets.values() for i in rs.instances}
        problems: list[str] = []
        for rs_id, instances in (await store_stats(self.store)).items():
            for name, stats in instances.items():
                problems.extend(self._publish(str(rs_id), name, stats, name_by_port))
        self.problems = problems
        return problems

    def _publish(self, rs: str, name: str, stats: dict[str, Any], name_by_port: dict[int, str]) -> list[str]:
        if "error" in stats:
            UP.labels(rs, name).set(0)
            # an instance that does not answer writes nothing: kept at 1, a dead master's gauge hid a replica set
            # without a master from RtrecStoreNoMaster (the sum stayed 1)
            WRITABLE.labels(rs, name).set(0)
            LEASE_LOST.labels(rs, name).set(0)
            return [f"store instance {name} does not answer: {stats['error']}"]
        facts = instance_facts(stats, name_by_port)
        UP.labels(rs, name).set(1)
        WRITABLE.labels(rs, name).set(0 if facts["ro"] else 1)
        ratio = facts["memory_used_ratio"] or 0.0
        MEMORY_USED.labels(rs, name).set(ratio)
        MEMORY_FAILURES.labels(rs, name).set(facts["memory_failures"]["count"])
        FEATURES.labels(rs, name).set(facts["features"] or 0)
        LEASE_LOST.labels(rs, name).set(1 if facts["lease_lost"] else 0)
        problems = []
        if ratio >= MEMORY_WARNING_RATIO:
            problems.append(f"store instance {name} uses {ratio:.0%} of its memory limit")
        for upstream in facts["upstreams"]:
            peer = str(upstream["peer"])
            following = upstream["status"] == "follow"
            FOLLOWING.labels(rs, name, peer).set(1 if following else 0)
            REPLICATION_LAG.labels(rs, name, peer).set(upstream["lag"] or 0)
            if not following:
                problems.append(f"store instance {name} does not follow {peer} ({upstream['status']})")
        if facts["lease_lost"]:
            problems.append(f"store instance {name} is the master but too few replicas follow it: it refuses writes")
        return problems
