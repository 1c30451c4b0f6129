"""Project settings: one TOML file (default ``deploy/local.toml``) plus ``RTREC_...`` environment overrides.

Each package defines the settings it is configured with (``feature_store/config.py``, ``extractors/config.py``,
``recommenders/config.py``, ``manager/config.py``); this module only composes them and loads them, so the
imports run one way: ``deploy`` -> ``manager``/``replay`` -> ``recommenders``/``extractors`` -> ``feature_store``.

Nested keys use a double underscore in the environment, e.g. ``RTREC_STORE__REPLICASETS=3`` or
``RTREC_API__PORT=9000``. Every part of the system (cluster launcher, consumers, API, benchmarks, tests)
reads the same ``Settings`` so ports and data directories can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from extractors.config import TOPICS, ConsumerSettings, KafkaSettings
from feature_store.config import StoreRole, StoreSettings, TtlSettings
from manager.config import ApiSettings, Role
from recommenders.config import RecommendationSettings

DEFAULT_CONFIG = Path("deploy/local.toml")

__all__ = [
    "TOPICS",
    "ApiSettings",
    "ConsumerSettings",
    "KafkaSettings",
    "RecommendationSettings",
    "Role",
    "Settings",
    "StoreRole",
    "StoreSettings",
    "TtlSettings",
    "load_settings",
]


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
