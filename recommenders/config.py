"""What the recommenders are configured with (section ``[recommendations]`` and the feature ``[views]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from feature_store.config import StoreSettings, TtlSettings


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
    # The recommendation cache (on in production; `rtrec bench serve --no-cache` measures the full path).
    cache: bool = True
    # `rtrec train` against the store that serves: one client read at a time, from a process of the lowest CPU
    # priority. On 2 cores at 500 rps, training's reads at full speed (16 clients at a time) took serving's p99
    # from 25 ms to 640 ms with 6 % of answers over budget; gently, 15 ms -> 267 ms and none
    # (`rtrec bench serve --while-training`, docs/benchmarks.md). "replica" spares the masters' CPU but reads
    # copies that replicate asynchronously: a replica restarted or cut off may be behind, and nothing here
    # checks it, so the default is the master.
    training_read_from: Literal["master", "replica"] = "master"
    training_read_concurrency: int = Field(default=1, ge=1)
    training_niceness: int = Field(default=19, ge=0, le=19)


class TrainingConfig(Protocol):
    """The settings training reads."""

    @property
    def store(self) -> StoreSettings: ...
    @property
    def ttl(self) -> TtlSettings: ...
    @property
    def recommendations(self) -> RecommendationSettings: ...
    @property
    def views(self) -> dict[str, list[str]]: ...
