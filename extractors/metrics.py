"""Prometheus metrics of a consumer process (served by `rtrec consume` on `consumer.metrics_port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("rtrec_consumer_messages_total", "Kafka messages consumed", ["topic"])
DEAD_LETTERS = Counter("rtrec_consumer_dead_letters_total", "Messages sent to the dead-letter topic", ["kind"])
TAKEN_AT_LATEST = Counter(
    "rtrec_consumer_times_taken_at_latest_total",
    "Applications and product events stamped too far ahead of their arrival, stored at the latest time accepted",
)
FEATURES_WRITTEN = Counter("rtrec_consumer_features_written_total", "Features written or deleted in the store")
BATCH_STORE_SECONDS = Histogram(
    "rtrec_consumer_store_write_seconds",
    "Store write time of one replica set's part of a consumed batch (its successful attempt)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LAG = Gauge("rtrec_consumer_lag_messages", "Messages not yet consumed, per topic", ["topic"])
HOLDING = Gauge(
    "rtrec_consumer_holding", "1 while a batch is held because a step keeps failing (store, dead letters)", ["stage"]
)
MESSAGES_IN_HAND = Gauge(
    "rtrec_consumer_messages_in_hand",
    "Messages fetched and not yet committed (a held replica set's backlog; at consumer.max_messages_in_hand all "
    "ingest waits)",
)
HOLDING_SECONDS = Gauge("rtrec_consumer_holding_seconds", "How long the current hold has lasted (0 when none)")
HOLD_FAILURES = Counter(
    "rtrec_consumer_hold_failures_total", "Failed attempts of a held step, by stage and error", ["stage", "error"]
)
LAST_POLL = Gauge("rtrec_consumer_last_poll_timestamp_seconds", "When the fetch loop last asked Kafka for records")
LAST_COMMIT = Gauge("rtrec_consumer_last_commit_timestamp_seconds", "When a batch's offsets were last committed")
REBALANCES = Counter("rtrec_consumer_rebalances_total", "Consumer group rebalances that revoked partitions")
COMMIT_FAILURES = Counter(
    "rtrec_consumer_commit_failures_total", "Offset commits refused (a rebalance); the batch is redelivered"
)
REPLAY_OFFSETS_DONE = Gauge("rtrec_replay_offsets_done", "Offsets replayed so far", ["replay"])
REPLAY_OFFSETS_TOTAL = Gauge("rtrec_replay_offsets_total", "Offsets in the replay window", ["replay"])
