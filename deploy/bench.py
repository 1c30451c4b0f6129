"""`rtrec bench store|ingest --json`: benchmarks on a private cluster and broker (config ports + 1000, a
temporary run directory), so they never disturb a running stack. Each prints one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from deploy import processes
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from feature_store.admin import store_stats
from feature_store.client import FeatureStore
from feature_store.records import Feature
from feature_store.specs import AggregateSpec, parse_view
from manager.schemas import MAX_SPECS_PER_REQUEST

DAY = 86400.0
TRAINING_CUTS = 15  # `rtrec evaluate` and the demo read a client at 15 weekly cuts (`rtrec train`: 12 by default)
# Names and relative frequencies of a typical retail client's features (match the client_profile view).
FEATURE_MIX = {
    "tx.out.amount": 0.30,
    "tx.out.mcc.groceries": 0.12,
    "tx.out.mcc.restaurants": 0.06,
    "tx.out.mcc.fuel": 0.03,
    "tx.out.mcc.travel": 0.01,
    "tx.out.mcc.electronics": 0.01,
    "tx.out.channel.online": 0.10,
    "tx.out.channel.atm": 0.02,
    "tx.out.fx.amount": 0.01,
    "tx.in.amount": 0.04,
    "tx.in.salary": 0.02,
    "balance": 0.28,
}


def _private(settings: Settings, run_dir: Path) -> Settings:
    """The settings of a benchmark's own cluster and broker, on ports the OS has free."""
    store_base, kafka_base = processes.free_port_block(40), processes.free_port_block(3)
    return settings.model_copy(
        update={
            "run_dir": run_dir,
            "store": settings.store.model_copy(update={"base_port": store_base, "max_features_per_subject": 1_000_000}),
            "kafka": settings.kafka.model_copy(update={"port": kafka_base, "controller_port": kafka_base + 1}),
            "api": settings.api.model_copy(update={"port": kafka_base + 2}),
        }
    )


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def percentiles(samples_ms: Any, prefix: str = "", digits: int = 3) -> dict[str, float | None]:
    """``{p50_ms, p99_ms, max_ms}`` of latency samples in milliseconds (None each when there are none)."""
    arr = np.asarray(samples_ms, dtype=float)
    if arr.size == 0:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None, f"{prefix}max_ms": None}
    return {
        f"{prefix}p50_ms": round(float(np.percentile(arr, 50)), digits),
        f"{prefix}p99_ms": round(float(np.percentile(arr, 99)), digits),
        f"{prefix}max_ms": round(float(arr.max()), digits),
    }


def bytes_per_feature(stats: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Memory per stored feature on the masters: tuple data and each index (``bsize``), and what the memtx
    allocator holds in all (arena in use, which also counts tuple headers, the small spaces and slab slack)."""
    data = arena = features = 0
    indexes: dict[str, int] = {}
    for instances in stats.values():
        master = next(s for s in instances.values() if "error" not in s and not s["ro"])
        features += master["features"]
        data += master["feature_bytes"]["data"]
        arena += master["memory"]["arena_used"]
        for name, size in master["feature_bytes"]["indexes"].items():
            indexes[name] = indexes.get(name, 0) + size
    per = max(features, 1)
    return {
        "features": features,
        "data_and_indexes": round((data + sum(indexes.values())) / per, 1),
        "data": round(data / per, 1),
        "indexes": {name: round(size / per, 1) for name, size in sorted(indexes.items())},
        "arena": round(arena / per, 1),
    }


def _subject_features(subject: str, n: int, now: float, rng: random.Random) -> list[Feature]:
    names = list(FEATURE_MIX)
    weights = list(FEATURE_MIX.values())
    return [
        Feature(
            subject,
            "transactions",
            name,
            f"{subject}-o{i}",
            round(rng.uniform(10, 5000), 2),
            now - rng.uniform(0, 365 * DAY),
        )
        for i, name in enumerate(rng.choices(names, weights=weights, k=n))
    ]


RESEND_ROWS = 20_000


async def _time_resends(store: FeatureStore, rows: list[Feature]) -> dict[str, Any]:
    """Write rows already stored again: unchanged (a redelivery or a replay, which only reads) and with new
    values (a correction of every transaction, whose first version's other rows are looked up name by name)."""
    started = time.perf_counter()
    unchanged = await store.put_features(rows)
    unchanged_s = time.perf_counter() - started
    started = time.perf_counter()
    changed = await store.put_features([f._replace(value=f.value + 1) for f in rows])  # type: ignore[operator]
    changed_s = time.perf_counter() - started
    return {
        "rows": len(rows),
        "unchanged_rows_per_s": round(unchanged.unchanged / unchanged_s),
        "changed_rows_per_s": round(changed.written / changed_s),
        "superseded": changed.superseded,
    }


async def bench_store(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            rng = random.Random(1)
            now = time.time()
            subjects = [f"bench-{i}" for i in range(args.subjects)]
            rows = [f for s in subjects for f in _subject_features(s, args.features_per_subject, now, rng)]
            started = time.perf_counter()
            chunk = 20_000
            for i in range(0, len(rows), chunk):
                await store.put_features(rows[i : i + chunk])
            write_s = time.perf_counter() - started
            # Replication is asynchronous: let the replicas finish applying before timing reads, so the
            # read figures are not the write phase's tail.
            await cluster.wait_synced(timeout=120)
            replicated_s = time.perf_counter() - started
            memory = bytes_per_feature(await store_stats(store))
            row_count = len(rows)
            resends = await _time_resends(store, rows[:RESEND_ROWS])
            del rows
            gc.collect()  # the 200k written rows would otherwise make every later GC pass slow

            view = parse_view(settings.views["client_profile"])
            latencies: list[float] = []
            queue = list(range(args.requests))

            async def worker() -> None:
                while queue:
                    queue.pop()
                    subject = subjects[rng.randrange(len(subjects))]
                    t0 = time.perf_counter()
                    await store.aggregate(subject, view, now)
                    latencies.append((time.perf_counter() - t0) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            aggregate_s = time.perf_counter() - started

            single: list[float] = []
            for _ in range(min(args.requests, 1000)):
                t0 = time.perf_counter()
                await store.aggregate(subjects[rng.randrange(len(subjects))], view, now)
                single.append((time.perf_counter() - t0) * 1000)

            # training's read: the view at 15 weekly cuts in one call, which holds the master that long
            cuts = [now - 7 * DAY * i for i in range(TRAINING_CUTS)]
            at_cuts: list[float] = []
            for _ in range(min(args.requests, 300)):
                t0 = time.perf_counter()
                await store.aggregate_at(subjects[rng.randrange(len(subjects))], view, cuts)
                at_cuts.append((time.perf_counter() - t0) * 1000)

            # the largest inspection request (`POST /v1/subjects/{s}/aggregate`): `changes` over the commonest
            # name with as many distinct windows as allowed, each version sorted by time, all in one call
            largest = [AggregateSpec("changes", "tx.out.amount", DAY * (1 + i)) for i in range(MAX_SPECS_PER_REQUEST)]
            inspections: list[float] = []
            for _ in range(20):
                t0 = time.perf_counter()
                await store.aggregate(subjects[rng.randrange(len(subjects))], largest, now)
                inspections.append((time.perf_counter() - t0) * 1000)

        # one expiry walk over every feature (none expired): what the hourly sweep costs a master
        started = time.perf_counter()
        for rs in cluster.topology:
            master = cluster.instance(cluster.master_name(rs))
            await cluster.call_instance(master, "expire_now", [time.time()], timeout=120)
        expiry_walk_s = time.perf_counter() - started
        return {
            "benchmark": "store",
            "machine": _machine(),
            "replicasets": settings.store.replicasets,
            "instances_per_replicaset": settings.store.instances_per_replicaset,
            "bytes_per_feature": memory,
            "write": {
                "rows": row_count,
                "seconds": round(write_s, 3),
                "rows_per_s": round(row_count / write_s),
                "replicated_rows_per_s": round(row_count / replicated_s),
            },
            "aggregate": {
                "features_per_subject": args.features_per_subject,
                "specs_per_call": len(view),
                "calls": args.requests,
                "concurrency": args.concurrency,
                "calls_per_s": round(args.requests / aggregate_s),
                **percentiles(latencies),
                "sequential": percentiles(single),
                f"sequential_at_{TRAINING_CUTS}_cuts": percentiles(at_cuts),
                "largest_inspection": {"specs": len(largest), **percentiles(inspections)},
            },
            "resend": resends,
            "expiry_walk": {
                "seconds": round(expiry_walk_s, 3),
                "us_per_feature": round(expiry_walk_s / row_count * 1e6, 3),
            },
        }
    finally:
        cluster.stop()


def run(target: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    if target == "ingest":
        from deploy.bench_ingest import run_ingest

        return run_ingest(settings, args)
    if target == "score":
        from deploy.bench_score import run_score

        return run_score(settings, args)
    if target == "extract":
        from deploy.bench_extract import run_extract

        return run_extract(settings, args)
    if target == "reshard":
        from deploy.bench_reshard import run_reshard

        return run_reshard(settings, args)
    if target == "inspect":
        from deploy.bench_inspect import run_inspect

        return run_inspect(settings, args)
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-") as tmp:
        return asyncio.run(bench_store(_private(settings, Path(tmp)), args))
