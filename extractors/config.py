"""What ingest is configured with: the bank's topics, the broker, the consumers (sections ``[kafka]`` and
``[consumer]``), and the slice of the project settings the consumer, the replay and the status read."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from extractors.extract import KNOWN_CHANNELS, ExtractionConfig
from feature_store.config import StoreSettings, TtlSettings

TOPICS = {
    "transactions": "bank.transactions",
    "transaction_deletes": "bank.transaction-deletes",
    "clients": "bank.clients",
    "applications": "bank.applications",
    "products": "bank.products",
    "dlq": "bank.dlq",
    "recommendations": "bank.recommendations",
}


class KafkaSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap_mb: int = 512
    # Prepended to every topic name (tests and side-by-side stacks use their own topics on one broker).
    topic_prefix: str = ""
    default_partitions: int = 4
    # Per-topic partition counts override the default (keys are topic names).
    partitions: dict[str, int] = Field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def partitions_for(self, topic: str) -> int:
        return self.partitions.get(self.canonical(topic), self.default_partitions)

    def topic(self, key: str) -> str:
        """The real topic name of a TOPICS key, e.g. ``topic("transactions")`` -> ``bank.transactions``."""
        return self.topic_prefix + TOPICS[key]

    def canonical(self, topic: str) -> str:
        """The DESIGN.md name of a (possibly prefixed) topic."""
        if self.topic_prefix and topic.startswith(self.topic_prefix):
            return topic[len(self.topic_prefix) :]
        return topic


class ConsumerSettings(BaseModel):
    group_id: str = "rtrec-extractors"
    max_batch_records: int = 5000
    poll_timeout_ms: int = 200
    instances: int = 1
    # Transactions in any other currency also produce tx.<dir>.fx.amount.
    home_currency: str = "RUB"
    # How far an event time may be ahead of the consumer's clock (clock skew); an event further ahead is a dead
    # letter (kind future_timestamp): stored, it would hide itself from reads and freeze client data until then.
    max_ahead_s: float = Field(default=60.0, ge=0)
    # Transaction channels that get their own feature (tx.<dir>.channel.<channel>); any other is counted as
    # tx.<dir>.channel.other, so a producer's new spellings cannot grow the store's feature names without bound.
    channels: list[str] = Field(default_factory=lambda: sorted(KNOWN_CHANNELS))
    # Prometheus endpoint of consumer i (1-based) is metrics_port + i - 1; 0 turns it off.
    metrics_port: int = 9102
    metrics_host: str = "127.0.0.1"
    # A stop request finishes the batch in hand; after this long (a batch held on a failing store) the
    # process exits anyway and the uncommitted batch is redelivered.
    stop_grace_s: float = 30.0
    # A rebalance waits this long for the batches in hand to be written before their partitions move; batches
    # still unwritten then (a store outage) are never written: the partitions' next owner reads them again.
    revoke_drain_s: float = Field(default=20.0, gt=0)
    # Messages a consumer keeps fetched but uncommitted. A replica set that cannot write holds back its own
    # clients' facts while the others' go on (extractors/lanes.py) until this many messages wait; then all
    # ingest waits. Each message in hand costs about 1.5 KB of memory (docs/operations.md, "Write lanes").
    max_messages_in_hand: int = Field(default=100_000, ge=1)
    # `rtrec up` supervision: restart backoff cap, and how long a silent (no heartbeat) consumer may live.
    restart_backoff_max_s: float = 60.0
    hung_after_s: float = 30.0

    def extraction(self) -> ExtractionConfig:
        """What the extractors read of these settings (the consumer, replays and the HTTP write path alike)."""
        return ExtractionConfig(
            home_currency=self.home_currency, max_ahead_s=self.max_ahead_s, channels=frozenset(self.channels)
        )


class IngestConfig(Protocol):
    """The settings ingest reads (the project's ``Settings`` has them all)."""

    @property
    def run_dir(self) -> Path: ...
    @property
    def kafka(self) -> KafkaSettings: ...
    @property
    def consumer(self) -> ConsumerSettings: ...
    @property
    def store(self) -> StoreSettings: ...
    @property
    def ttl(self) -> TtlSettings: ...
