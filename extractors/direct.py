"""Apply events straight to the store through the same extractors, without Kafka: for tests, training
fixtures and bulk backfills where the broker adds nothing."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from extractors.batch import within_skew
from extractors.config import TOPICS
from extractors.decode import validate_event
from extractors.extract import SOURCE_TRANSACTIONS, ExtractionConfig, extract
from extractors.ops import AppendFeatures, ApplyResult, FeatureWriter, StoreOp, apply_ops
from feature_store.records import OTHER_ANCHORS

BATCH_EVENTS = 5000
# The cyclic collector's first threshold during a bulk load (Python's default is 700 allocations).
BULK_GC_THRESHOLD = 50_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """A bulk load allocates millions of short-lived events, features and wire rows, none of them in reference
    cycles. With the default thresholds the collector ran every 700 allocations and, every tenth time, walked
    the older objects too: a 1,500-client bank loaded in 43-48 s, 33-35 s with these (docs/benchmarks.md). Restored
    on the way out."""
    before = gc.get_threshold()
    gc.set_threshold(BULK_GC_THRESHOLD, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


async def load_events(
    store: FeatureWriter,
    events: Iterable[tuple[str, str, dict[str, object]]],
    config: ExtractionConfig | None = None,
    transaction_names: frozenset[str] | None = None,
) -> ApplyResult:
    """``(topic_key, key, payload)`` events -> validated -> extracted -> applied in batches.

    ``transaction_names`` lets a store loaded only to train and judge models take just the transaction
    features a snapshot reads: most of a bank's rows are transaction features no view aggregates (a 1,500-client
    bank loaded 40 % fewer rows, 25 % faster). Client data, products, applications and deletions apply whole,
    and so does a transaction sent again within the load (``TransactionFilter``)."""
    config = config or ExtractionConfig()
    total = ApplyResult()
    ops: list[StoreOp] = []

    async def flush() -> None:
        result = await apply_ops(store, ops)
        total.written += result.written
        total.deleted += result.deleted
        total.refused.update(result.refused)
        ops.clear()

    only_read = None if transaction_names is None else TransactionFilter(transaction_names)
    now = time.time()
    with fewer_collections():
        for count, (topic_key, _, payload) in enumerate(events, start=1):
            event = validate_event(TOPICS[topic_key], payload)
            extracted = extract(event, config, at=within_skew(event, now, config.max_ahead_s))  # as the consumer
            ops.extend(extracted if only_read is None else only_read.kept(extracted))
            if count % BATCH_EVENTS == 0:
                await flush()
        await flush()
    return total


class TransactionFilter:
    """Transactions with only the features a reader needs, and whatever keeps their versions right.

    A transaction's anchor (its amount) always stays: the store tells a corrected direction by it. A version
    sent again under a ``tx_id`` this load has seen goes whole: trimmed, a correction that changed only features
    left out (a category to none, another counterparty) would match the first version's trimmed rows, so the
    store would see no change and keep that version's category. Whole, its new rows make it a change, and the
    store drops the first version's rows under names it lacks, as in a whole load.

    The seen transactions are a one-hash Bloom filter of ``SEEN_BITS`` bits (32 MB): a repeat is never missed;
    a first version taken for one (about 3 % of them at 8 million transactions) goes whole, which costs rows,
    not correctness."""

    SEEN_BITS = 1 << 28

    def __init__(self, transaction_names: frozenset[str]) -> None:
        self.names = transaction_names | OTHER_ANCHORS.keys()
        self._seen = bytearray(self.SEEN_BITS // 8)

    def kept(self, ops: Iterable[StoreOp]) -> Iterator[StoreOp]:
        for op in ops:
            if not isinstance(op, AppendFeatures) or not op.features or op.features[0].source != SOURCE_TRANSACTIONS:
                yield op
                continue
            if self._seen_before(op.features[0].subject, op.features[0].object):
                yield op
                continue
            features = tuple(f for f in op.features if f.name in self.names)
            if len(features) == len(op.features):
                yield op
            elif features:
                yield AppendFeatures(features, op.origin)

    def _seen_before(self, subject: str, tx_id: str) -> bool:
        """Whether the transaction was (maybe) seen before in this load; marks it seen."""
        bit = hash((subject, tx_id)) & (self.SEEN_BITS - 1)
        mask = 1 << (bit & 7)
        seen = self._seen[bit >> 3] & mask
        self._seen[bit >> 3] |= mask
        return seen != 0
