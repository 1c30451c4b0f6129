"""`rtrec bench reshard --json`: what adding a replica set costs. A private cluster of the configured replica
sets holds ``--subjects`` x ``--features-per-subject`` features; ``add_replicaset`` then starts one more replica
set and moves it an even share of the buckets (each move waits for a replica on both sides)."""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.bench import _machine, _private, _subject_features
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from feature_store.client import FeatureStore


async def _bench_reshard(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        rng, now = random.Random(1), time.time()
        rows = [
            f
            for i in range(args.subjects)
            for f in _subject_features(f"bench-{i}", args.features_per_subject, now, rng)
        ]
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            for first in range(0, len(rows), 20_000):
                await store.put_features(rows[first : first + 20_000])
        await cluster.wait_synced(timeout=120)
        started = time.perf_counter()
        moved = await cluster.add_replicaset()
        seconds = time.perf_counter() - started
        return {
            "benchmark": "reshard",
            "machine": _machine(),
            "features": len(rows),
            "replicasets_before": settings.store.replicasets,
            **moved,
            "seconds": round(seconds, 3),  # starting the new replica set included
            "ms_per_bucket": round(seconds / max(moved["buckets_moved"], 1) * 1000, 3),
        }
    finally:
        StoreCluster(settings).stop()  # a fresh object: it reads the grown replica set count


def run_reshard(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-") as tmp:
        return asyncio.run(_bench_reshard(_private(settings, Path(tmp)), args))
