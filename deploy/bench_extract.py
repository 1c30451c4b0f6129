"""`rtrec bench extract --json`: the consumer's pure work per event, no broker and no store: decode and validate
a JSON transaction, extract its features, build the rows `put_features` sends. Run once with CPython's default
garbage-collector settings and once with the consumer's (`extractors.process.tune_gc`), in that order (the
tuning freezes what exists, so it cannot be undone within the process).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import namedtuple
from typing import Any

import orjson

from deploy.bench import _machine
from deploy.bench_producer import transactions
from deploy.settings import Settings
from extractors.batch import extract_batch
from extractors.config import TOPICS
from extractors.extract import ExtractionConfig
from extractors.ops import AppendFeatures
from extractors.process import GC_THRESHOLDS, tune_gc
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


def run_extract(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    events = transactions(args.events, max(args.events // 200, 1), time.time())
    records = [Record(TOPICS["transactions"], 0, i, None, orjson.dumps(e), [], 0, 0) for i, e in enumerate(events)]
    store = FeatureStore(settings.store)  # only builds rows: never connects
    default = _microseconds_per_event(records, store, rounds=3)
    tune_gc()
    tuned = _microseconds_per_event(records, store, rounds=3)
    return {
        "benchmark": "extract",
        "machine": _machine(),
        "events": len(records),
        "us_per_event_default_gc": default,
        "us_per_event_consumer_gc": tuned,
        "consumer_gc_thresholds": list(GC_THRESHOLDS),
        "gc_enabled": gc.isenabled(),
    }
