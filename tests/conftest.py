"""Test session: a real Tarantool cluster (2 replica sets x 3 instances, asynchronous replication) and a real
Kafka broker (KRaft), both on free loopback ports in a temporary directory. Tests isolate themselves with
unique subjects and, for Kafka, their own topic prefix and consumer group."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy import processes
from deploy.cluster import StoreCluster
from deploy.kafka_broker import KafkaBroker
from deploy.settings import Settings, load_settings
from extractors.direct import load_events
from extractors.extract import ExtractionConfig
from feature_store.client import FeatureStore
from feature_store.fake import InMemoryFeatureStore

ROOT = Path(__file__).resolve().parent.parent


def free_port_block(size: int) -> int:
    """A base port with ``size`` consecutive free ports after it (from the OS's point of view, now)."""
    return processes.free_port_block(size)


def settings_env(settings: Settings) -> dict[str, str]:
    """RTREC_... variables that make a subprocess (`rtrec consume`, ...) use the test stack."""
    return {
        "RTREC_RUN_DIR": str(settings.run_dir),
        "RTREC_KAFKA_HOME": str(settings.kafka_home),
        "RTREC_STORE__BASE_PORT": str(settings.store.base_port),
        "RTREC_STORE__PASSWORD": settings.store.password,
        "RTREC_STORE__REPLICASETS": str(settings.store.replicasets),
        "RTREC_KAFKA__PORT": str(settings.kafka.port),
        "RTREC_KAFKA__CONTROLLER_PORT": str(settings.kafka.controller_port),
        "RTREC_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "RTREC_CONSUMER__GROUP_ID": settings.consumer.group_id,
        "RTREC_CONSUMER__MAX_BATCH_RECORDS": str(settings.consumer.max_batch_records),
        "RTREC_API__PORT": str(settings.api.port),
        "RTREC_CONSUMER__METRICS_PORT": "0",  # tests turn it on where they check it
    }


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = load_settings(ROOT / "deploy" / "local.toml")
    store_base = free_port_block(40)
    kafka_base = free_port_block(3)
    run_dir = tmp_path_factory.mktemp("rtrec-run")
    return base.model_copy(
        update={
            "run_dir": run_dir,
            "kafka_home": ROOT / ".rtrec" / "kafka",
            "store": base.store.model_copy(
                update={
                    "base_port": store_base,
                    "password": uuid.uuid4().hex,
                    "memtx_memory_mb": 512,  # the session loads ~1M features across tests
                    "max_features_per_subject": 20000,
                    "expiry_interval_s": 0.5,
                    "feature_sweep_interval_s": 0.5,
                    "deny_subjects": ["BANK"],
                }
            ),
            "kafka": base.kafka.model_copy(
                update={
                    "port": kafka_base,
                    "controller_port": kafka_base + 1,
                    "heap_mb": 384,
                    "default_partitions": 2,
                    "partitions": {"bank.transactions": 4},
                }
            ),
            "api": base.api.model_copy(update={"port": kafka_base + 2}),
        }
    )


@pytest.fixture(scope="session")
async def cluster(settings: Settings) -> AsyncIterator[StoreCluster]:
    cluster = StoreCluster(settings)
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def store(cluster: StoreCluster, settings: Settings) -> AsyncIterator[FeatureStore]:
    async with FeatureStore(settings.store, topology=cluster.topology) as client:
        yield client


@pytest.fixture(scope="module")
def runner_store(cluster: StoreCluster, settings: Settings) -> Iterator[tuple[asyncio.Runner, FeatureStore]]:
    """A private event loop so hypothesis can drive the async client from a synchronous test."""
    with asyncio.Runner() as runner:
        store = FeatureStore(settings.store, topology=cluster.topology)
        runner.run(store.start())
        yield runner, store
        runner.run(store.stop())


@pytest.fixture(scope="session")
def broker(settings: Settings) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(settings)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def kafka_settings(settings: Settings, broker: KafkaBroker) -> Settings:
    """Settings with a topic prefix and consumer group of this test only; the topics exist."""
    tag = uuid.uuid4().hex[:8]
    isolated = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"t{tag}."}),
            "consumer": settings.consumer.model_copy(update={"group_id": f"g{tag}", "max_batch_records": 500}),
        }
    )
    await KafkaBroker(isolated).create_topics()
    return isolated


@pytest.fixture
def uid() -> str:
    """A unique prefix for subjects of one test."""
    return uuid.uuid4().hex[:8]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def private_settings(base: Settings, run_dir: Path, **store: Any) -> Settings:
    """``base`` with a run directory and a store on free ports of its own (and any other store settings)."""
    return base.model_copy(
        update={
            "run_dir": run_dir,
            "store": base.store.model_copy(update={"base_port": free_port_block(40), **store}),
        }
    )


@pytest.fixture
async def private_cluster(
    kafka_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, StoreCluster]]:
    """A cluster of this test only (failover and resharding change masters and replica sets)."""
    s = private_settings(kafka_settings, tmp_path_factory.mktemp("private"), replicasets=2)
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        yield s, cluster
    finally:
        StoreCluster(s).stop()  # a fresh object: it reads a grown replica set count


async def reference_state(settings: Settings, events: list[tuple[str, str, dict[str, Any]]]) -> InMemoryFeatureStore:
    """The store an uninterrupted, exactly-once run of ``events`` would leave (same extractors, in memory)."""
    reference = InMemoryFeatureStore()
    await load_events(reference, events, ExtractionConfig(home_currency=settings.consumer.home_currency))
    return reference
