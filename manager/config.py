"""What the API and recommendation manager are configured with (section ``[api]``), and the slice of the
project settings the application reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from extractors.config import ConsumerSettings, KafkaSettings
from feature_store.config import StoreSettings, TtlSettings
from recommenders.config import RecommendationSettings

Role = Literal["reader", "writer", "operator", "scorer"]


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    keys: dict[str, Role] = Field(default_factory=dict)
    # Larger request bodies get 413 before they are read (a batch of 10,000 transactions is about 3 MB).
    max_body_bytes: int = 4 * 1024 * 1024
    # API worker processes on one port (each loads the models and the catalogue, and hot-reloads them);
    # one Python process saturates a core at ~600 recommendations/s (rtrec bench serve, docs/benchmarks.md).
    workers: int = 2

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class AppConfig(Protocol):
    """The settings the HTTP application reads."""

    @property
    def run_dir(self) -> Path: ...
    @property
    def api(self) -> ApiSettings: ...
    @property
    def store(self) -> StoreSettings: ...
    @property
    def ttl(self) -> TtlSettings: ...
    @property
    def kafka(self) -> KafkaSettings: ...
    @property
    def consumer(self) -> ConsumerSettings: ...
    @property
    def recommendations(self) -> RecommendationSettings: ...
    @property
    def views(self) -> dict[str, list[str]]: ...
