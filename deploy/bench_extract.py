"""`rtrec bench extract --json`: the consumer's pure work per event, no broker and no store: decode and validate
a JSON transaction, extract its features, build the rows `put_features` sends. Run once with CPython's default
garbage-collector settings and once with the consumer's (`extractors.process.tune_gc`), in that order (the
tuning freezes what exists, so it cannot be undone within the process). Also the memory a consumer keeps per
message in hand, on a simulated bank's mix of events (a fetched batch's records and operations, kept until its
commit: ``consumer.max_messages_in_hand`` bounds them).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections import namedtuple
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from deploy.bench import _machine
from deploy.bench_producer import transactions
from deploy.settings import Settings
from extractors.batch import extract_batch
from extractors.config import TOPICS
from extractors.extract import ExtractionConfig
from extractors.ops import AppendFeatures
from extractors.process import GC_THRESHOLDS, tune_gc
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore

Record = namedtuple("Record", "topic partition offset key value headers timestamp timestamp_type")
BATCH = 5000  # the consumer's default max_batch_records


def _microseconds_per_event(records: list[Record], store: FeatureStore, rounds: int) -> float:
    config = ExtractionConfig()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(records), BATCH):
            batch = extract_batch(records[start : start + BATCH], config)
            buckets: dict[str, int] = {}
            rows = [store._row(f, buckets) for op in batch.ops if isinstance(op, AppendFeatures) for f in op.features]
            del rows
        best = min(best, time.perf_counter() - started)
    return round(best / len(records) * 1e6, 2)


def _bytes_in_hand_per_message(events: list[tuple[str, str, dict[str, Any]]]) -> int:
    """Traced allocations of one batch of a simulated bank's events as the consumer keeps it: its records as
    aiokafka hands them (keys and values copied to their exact size: orjson's own bytes each keep a 4 KB
    buffer) and their operations."""
    config = ExtractionConfig()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records = []
        for offset, (topic_key, key, payload) in enumerate(events):
            value, key_bytes = bytes(memoryview(orjson.dumps(payload))), key.encode()
            records.append(
                ConsumerRecord(
                    TOPICS[topic_key], 0, offset, 0, 0, key_bytes, value, None, len(key_bytes), len(value), []
                )
            )
        in_hand = (records, extract_batch(records, config))
        kept = tracemalloc.get_traced_memory()[0] - before
        del in_hand
    finally:
        tracemalloc.stop()
    return round(kept / len(events))


def _simulated_mix(count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``count`` events spread over a small simulated bank's stream (it opens with every client's data)."""
    events = list(BankSimulator(SimulationConfig(clients=300, days=90, seed=5)).events())
    step = max(len(events) // count, 1)
    return events[::step][:count]


def run_extract(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    events = transactions(args.events, max(args.events // 200, 1), time.time())
    records = [Record(TOPICS["transactions"], 0, i, None, orjson.dumps(e), [], 0, 0) for i, e in enumerate(events)]
    store = FeatureStore(settings.store)  # only builds rows: never connects
    default = _microseconds_per_event(records, store, rounds=3)
    tune_gc()
    tuned = _microseconds_per_event(records, store, rounds=3)
    in_hand = _bytes_in_hand_per_message(_simulated_mix(BATCH))
    return {
        "benchmark": "extract",
        "machine": _machine(),
        "events": len(records),
        "us_per_event_default_gc": default,
        "us_per_event_consumer_gc": tuned,
        "consumer_gc_thresholds": list(GC_THRESHOLDS),
        "bytes_in_hand_per_message": in_hand,
        "gc_enabled": gc.isenabled(),
    }
