"""Project settings: one TOML file (default ``deploy/local.toml``) plus ``RTREC_...`` environment overrides.

Nested keys use a double underscore in the environment, e.g. ``RTREC_STORE__REPLICASETS=3`` or
``RTREC_API__PORT=9000``. Every part of the system (cluster launcher, consumers, API, benchmarks, tests)
reads the same ``Settings`` so ports and data directories can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG = Path("deploy/local.toml")

Role = Literal["reader", "writer", "operator", "scorer"]
StoreRole = Literal["ops", "ingest", "api"]

TOPICS = {
    "transactions": "bank.transactions",
    "transaction_deletes": "bank.transaction-deletes",
    "clients": "bank.clients",
    "applications": "bank.applications",
    "products": "bank.products",
    "dlq": "bank.dlq",
    "recommendations": "bank.recommendations",
}


class StoreSettings(BaseModel):
    """The Tarantool cluster: replica sets of one master and N-1 replicas each, on loopback ports."""

    host: str = "127.0.0.1"
    base_port: int = 3301
    # Instance j of replica set i listens on base_port + (i - 1) * port_stride + j.
    port_stride: int = 10
    replicasets: int = 2
    instances_per_replicaset: int = 3
    # The operations user (schema, bucket moves, failover, replication): the launcher and ops commands.
    user: str = "rtrec"
    password: str = "change-me"
    # Least privilege for the services: the consumers may only write features; the API may also read,
    # aggregate and use the recommendation cache (lua/access.lua).
    ingest_user: str = "rtrec_ingest"
    ingest_password: str = "change-me-ingest"
    api_user: str = "rtrec_api"
    api_password: str = "change-me-api"
    bucket_count: int = 3000
    memtx_memory_mb: int = 1024
    max_features_per_subject: int = 100_000
    deny_subjects: list[str] = Field(default_factory=list)
    expiry_interval_s: float = 60.0
    tombstone_ttl_s: float = 7 * 86400.0
    read_from: Literal["master", "replica"] = "master"

    def credentials(self, role: StoreRole) -> tuple[str, str]:
        """(user, password) of a store role: ``ops``, ``ingest`` or ``api``."""
        if role == "ingest":
            return self.ingest_user, self.ingest_password
        if role == "api":
            return self.api_user, self.api_password
        return self.user, self.password

    write_batch_rows: int = 2000
    request_timeout_s: float = 5.0


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
    # Prometheus endpoint of consumer i (1-based) is metrics_port + i - 1; 0 turns it off.
    metrics_port: int = 9102
    # A stop request finishes the batch in hand; after this long (a batch held on a failing store) the
    # process exits anyway and the uncommitted batch is redelivered.
    stop_grace_s: float = 30.0
    # `rtrec up` supervision: restart backoff cap, and how long a silent (no heartbeat) consumer may live.
    restart_backoff_max_s: float = 60.0
    hung_after_s: float = 30.0


class TtlSettings(BaseModel):
    """How long features live after their ``time_use``; the most specific rule wins (name, source, default)."""

    default_days: float = 400.0
    sources: dict[str, float] = Field(
        default_factory=lambda: {
            "transactions": 400.0,
            "client_profile": 3650.0,
            "registry": 3650.0,
            "applications": 400.0,
            "products": 3650.0,
        }
    )
    names: dict[str, float] = Field(default_factory=dict)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    keys: dict[str, Role] = Field(default_factory=dict)
    # Larger request bodies get 413 before they are read (a batch of 10,000 transactions is about 3 MB).
    max_body_bytes: int = 4 * 1024 * 1024

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class RecommendationSettings(BaseModel):
    """Where the catalogue and models live and how the manager calls its scorers."""

    catalogue: Path = Path("deploy/products.toml")
    models_dir: Path = Path("artifacts/models")
    view: str = "client_profile"
    reload_interval_s: float = 2.0
    # Per-scorer timeouts inside the overall budget (the catalogue's [decision] budget_s).
    scorer_timeouts_s: dict[str, float] = Field(default_factory=lambda: {"xgboost": 0.3, "als": 0.1, "expert": 0.1})
    # Products whose XGBoost scorer runs as its own service (`rtrec serve-scorer --product P`): product -> URL.
    remote_scorers: dict[str, str] = Field(default_factory=dict)
    # A master that has not answered a client read after this long is raced by its replicas (fresh ones only).
    hedge_after_s: float = 0.05
    audit_to_kafka: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTREC_", env_nested_delimiter="__", extra="ignore")

    run_dir: Path = Path(".rtrec/run")
    kafka_home: Path = Path(".rtrec/kafka")
    store: StoreSettings = Field(default_factory=StoreSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    ttl: TtlSettings = Field(default_factory=TtlSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    recommendations: RecommendationSettings = Field(default_factory=RecommendationSettings)
    # Named feature views: view name -> list of spec strings such as "sum(tx.out.amount, 30d)".
    views: dict[str, list[str]] = Field(default_factory=dict)


def load_settings(path: Path | str | None = None, **overrides: object) -> Settings:
    """Settings from ``path`` (TOML), then ``RTREC_...`` variables, then explicit ``overrides``."""
    toml_path = Path(path) if path is not None else DEFAULT_CONFIG

    class _FromFile(Settings):
        model_config = SettingsConfigDict(
            env_prefix="RTREC_", env_nested_delimiter="__", extra="ignore", toml_file=toml_path
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    return Settings.model_validate(_FromFile(**overrides).model_dump())  # type: ignore[arg-type]
