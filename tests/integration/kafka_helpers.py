"""Helpers shared by the Kafka integration tests: produce raw messages, read a topic, publish a simulated bank,
run `rtrec consume` as a process against the test stack, wait for conditions, compare the store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy.settings import Settings
from deploy.stack import LocalStack
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from feature_store.fake import InMemoryFeatureStore
from tests.conftest import ROOT, reference_state, settings_env


async def produce(settings: Settings, messages: list[tuple[str, bytes | None, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for topic_key, value, headers in messages:
            await producer.send_and_wait(settings.kafka.topic(topic_key), value=value, key=b"k", headers=headers)
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str, expected: int, timeout: float = 20.0) -> list:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(r for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return records


async def expected_state(settings: Settings, events: list[tuple[str, str, dict]]) -> InMemoryFeatureStore:
    """The store an uninterrupted, exactly-once run would produce (same extractors, in-memory semantics)."""
    return await reference_state(settings, events)


async def assert_store_equals(store: FeatureStore, expected: InMemoryFeatureStore, subjects: list[str]) -> None:
    for subject in subjects:
        rows = await store.get_features(subject, limit=100_000)
        got = {(r.source, r.name, r.object, r.value, r.time_use) for r in rows}
        want = expected.snapshot(subject)
        assert got == want, (subject, len(got), len(want), list(got ^ want)[:5])


async def publish_simulated(settings: Settings, prefix: str, *, clients: int, days: int, seed: int) -> list:
    """Publish a small simulated bank whose client ids start with ``prefix``; returns its events."""
    events = list(BankSimulator(SimulationConfig(clients=clients, days=days, seed=seed, client_prefix=prefix)).events())
    await publish_events(settings, events, progress=False)
    return events


def consume_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """`rtrec consume` as a separate process pointed at the test stack (command, environment)."""
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}
    return [sys.executable, "-m", "deploy.cli", "consume", "--config", str(ROOT / "deploy" / "local.toml")], env


async def wait_for(condition: Callable[[], Awaitable[Any]], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` passes (fails)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def background_done(service: Any) -> None:
    """Wait until a RecommendationService has no background work left (cache puts, audit records)."""

    async def idle() -> bool:
        return not service._background

    await wait_for(idle, timeout=5, what="the service's background work", interval=0.01)


def stack_status(settings: Settings) -> dict[str, Any]:
    """What `rtrec status --json` says of the test stack."""
    return LocalStack(settings, ROOT / "deploy" / "local.toml").status()


def supervise(settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    """`rtrec supervise` (the consumers under their supervisor) against the test stack, as a process."""
    environment = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT), **env}
    log = open(settings.run_dir / "supervise-test.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "supervise", "--config", str(ROOT / "deploy" / "local.toml")],
        env=environment,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM and wait (a supervisor stops its consumers first); SIGKILL only if that hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
