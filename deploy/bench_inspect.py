"""`rtrec bench inspect --json --features-per-subject 100000`: what one large subject's reads cost the other
requests to its replica set. One subject holds ``--features-per-subject`` features (the per-subject cap is
100,000) under the names of the served view, over 300 days. Two phases of ``--seconds`` each: reads of that
subject run back to back, first raw reads of its ten oldest rows (`GET /v1/subjects/{s}/features`,
`get_features`), then the served view (what a recommendation for it reads, `aggregate`), while a light client's
aggregate is timed every 10 ms."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from deploy.bench import _machine, _private, percentiles
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from feature_store.client import FeatureStore
from feature_store.records import Feature
from feature_store.specs import AggregateSpec, parse_view

INSPECTED_ROWS = 10  # the store's work is the subject's size, not the rows sent back


async def _light_reads_while(
    heavy: Callable[[], Awaitable[Any]], store: FeatureStore, seconds: float
) -> dict[str, Any]:
    """Run ``heavy`` back to back for ``seconds`` while timing a light client's aggregate every 10 ms."""
    spec = [AggregateSpec("sum", "tx.out.amount", 30 * 86400)]
    stop = asyncio.Event()
    heavy_ms: list[float] = []

    async def loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await heavy()
            heavy_ms.append((time.perf_counter() - started) * 1000)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.2)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await store.aggregate("light", spec)
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    stop.set()
    await task
    return {
        "large_reads_per_s": round(len(heavy_ms) / seconds, 2),
        "large_read": percentiles(heavy_ms, digits=1),
        "light_reads": len(latencies),
        "light_read": percentiles(latencies, digits=1),
    }


async def _bench_inspect(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            now = time.time()
            view = parse_view(settings.views[settings.recommendations.view])
            names = sorted({spec.feature for spec in view if spec.feature.startswith(("tx.", "balance"))})
            rows = [
                Feature("fat", "transactions", names[i % len(names)], f"t{i}", 1.0, now - 86400 * 300 + i * 259)
                for i in range(args.features_per_subject)
            ]
            for first in range(0, len(rows), 20_000):
                await store.put_features(rows[first : first + 20_000])
            await store.put_features([Feature("light", "transactions", "tx.out.amount", "t1", 5.0, now - 10)])
            raw = await _light_reads_while(lambda: store.get_features("fat", limit=INSPECTED_ROWS), store, args.seconds)
            served = await _light_reads_while(lambda: store.aggregate("fat", view), store, args.seconds)
        return {
            "benchmark": "inspect",
            "machine": _machine(),
            "features_of_the_large_subject": len(rows),
            "raw_read": raw,
            "view_read": served,
        }
    finally:
        cluster.stop()


def run_inspect(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-") as tmp:
        private = _private(settings, Path(tmp))
        store = private.store.model_copy(update={"replicasets": 1, "instances_per_replicaset": 1})
        return asyncio.run(_bench_inspect(private.model_copy(update={"store": store}), args))
