"""`rtrec bench inspect --json --features-per-subject 100000`: what a raw inspection read of a large subject
(`GET /v1/subjects/{s}/features`, `get_features`) costs the other requests to its replica set. One subject holds
``--features-per-subject`` features (the per-subject cap is 100,000); while reads of its ten oldest rows run
back to back, a light client's aggregate is timed every 10 ms for ``--seconds``."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.bench import _machine, _private, percentiles
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from feature_store.client import FeatureStore
from feature_store.records import Feature
from feature_store.specs import AggregateSpec

INSPECTED_ROWS = 10  # the store's work is the subject's size, not the rows sent back


async def _bench_inspect(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            now = time.time()
            rows = [
                Feature("fat", "transactions", f"tx.out.mcc.n{i % 20}", f"t{i}", 1.0, now - 86400 * 300 + i)
                for i in range(args.features_per_subject)
            ]
            for first in range(0, len(rows), 20_000):
                await store.put_features(rows[first : first + 20_000])
            await store.put_features([Feature("light", "transactions", "tx.out.amount", "t1", 5.0, now - 10)])
            spec = [AggregateSpec("sum", "tx.out.amount", 30 * 86400)]
            stop = asyncio.Event()

            async def inspect() -> int:
                done = 0
                while not stop.is_set():
                    await store.get_features("fat", limit=INSPECTED_ROWS)
                    done += 1
                return done

            inspections = asyncio.create_task(inspect())
            await asyncio.sleep(0.2)
            latencies: list[float] = []
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                await store.aggregate("light", spec)
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.01)
            stop.set()
            done = await inspections
        return {
            "benchmark": "inspect",
            "machine": _machine(),
            "features_of_the_inspected_subject": len(rows),
            "inspections_per_s": round(done / args.seconds, 2),
            "light_reads": len(latencies),
            "light_read": percentiles(latencies, digits=1),
        }
    finally:
        cluster.stop()


def run_inspect(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-") as tmp:
        private = _private(settings, Path(tmp))
        store = private.store.model_copy(update={"replicasets": 1, "instances_per_replicaset": 1})
        return asyncio.run(_bench_inspect(private.model_copy(update={"store": store}), args))
