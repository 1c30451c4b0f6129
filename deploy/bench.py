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
import orjson
from aiokafka import AIOKafkaProducer

from deploy import processes
from deploy.cluster import StoreCluster
from deploy.kafka_broker import KafkaBroker
from deploy.settings import Settings
from extractors.consumer import ExtractorConsumer
from feature_store.client import FeatureStore
from feature_store.records import Feature
from feature_store.specs import parse_view

DAY = 86400.0
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
            row_count = len(rows)
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
        return {
            "benchmark": "store",
            "machine": _machine(),
            "replicasets": settings.store.replicasets,
            "instances_per_replicaset": settings.store.instances_per_replicaset,
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
            },
        }
    finally:
        cluster.stop()


def _transactions(n: int, clients: int, now: float) -> list[bytes]:
    rng = random.Random(2)
    mccs = [5411, 5812, 5541, 4511, 5732, 4900, None]
    out = []
    for i in range(n):
        payload: dict[str, Any] = {
            "tx_id": f"t{i}",
            "client_id": f"ingest-{rng.randrange(clients)}",
            "ts": now - rng.uniform(0, 300 * DAY),
            "amount": round(rng.uniform(10, 5000), 2),
            "currency": "RUB",
            "direction": rng.choice(["in", "out"]),
            "channel": rng.choice(["pos", "online", "atm"]),
            "balance": round(rng.uniform(0, 1e5), 2),
        }
        mcc = rng.choice(mccs)
        if mcc is not None:
            payload["mcc"] = mcc
        out.append(orjson.dumps(payload))
    return out


async def _ingest(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        payloads = _transactions(args.events, clients=max(args.events // 200, 1), now=time.time())
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
        )
        await producer.start()
        started = time.perf_counter()
        topic = settings.kafka.topic("transactions")
        futures = [await producer.send(topic, value=p, key=p[10:30]) for p in payloads]
        await asyncio.gather(*futures)
        publish_s = time.perf_counter() - started
        await producer.stop()

        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            consumer = ExtractorConsumer(settings, store)
            started = time.perf_counter()
            stats = await consumer.run(idle_exit_s=2.0)
            consume_s = time.perf_counter() - started - 2.0  # minus the idle wait that ends the run
        return {
            "benchmark": "ingest",
            "machine": _machine(),
            "events": stats.messages,
            "features_written": stats.features_written,
            "dead_letters": stats.dead_letters,
            "publish_events_per_s": round(args.events / publish_s),
            "consume_seconds": round(consume_s, 3),
            "events_per_s": round(stats.messages / consume_s),
            "features_per_s": round(stats.features_written / consume_s),
            "lag_after": 0 if stats.messages == args.events else args.events - stats.messages,
            "batch_records": settings.consumer.max_batch_records,
            "stage_seconds": {
                "fetch": round(stats.seconds_fetch, 3),
                "extract": round(stats.seconds_extract, 3),
                "store": round(stats.seconds_store, 3),
                "commit": round(stats.seconds_commit, 3),
            },
        }
    finally:
        cluster.stop()


def bench_ingest(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    broker = KafkaBroker(settings)
    broker.start()
    try:
        return asyncio.run(_ingest(settings, args))
    finally:
        broker.stop()


def run(target: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-") as tmp:
        private = _private(settings, Path(tmp))
        if target == "store":
            return asyncio.run(bench_store(private, args))
        return bench_ingest(private, args)
