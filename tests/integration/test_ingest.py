"""Kafka -> extractors -> store against the real broker and cluster."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import msgpack
import orjson

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.consumer import ExtractorConsumer
from extractors.dlq import header
from extractors.offsets import consumer_lag
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from tests.conftest import ROOT
from tests.integration.kafka_helpers import (
    assert_store_equals,
    consume_command,
    expected_state,
    produce,
    publish_simulated,
    read_all,
)


async def test_bad_messages_go_to_the_dlq_and_the_consumer_keeps_going(
    kafka_settings: Settings,
    store: FeatureStore,
    uid: str,
) -> None:
    s = kafka_settings
    good = {
        "tx_id": f"{uid}-1",
        "client_id": f"{uid}-c",
        "ts": "2026-11-01T10:00:00Z",
        "amount": 10.5,
        "currency": "RUB",
        "direction": "out",
        "mcc": 5411,
    }
    good_msgpack = {**good, "tx_id": f"{uid}-2", "amount": 4.5}
    bad = [
        ("transactions", b'{"tx_id": "x", "client_id": ', []),  # malformed JSON
        ("transactions", orjson.dumps({**good, "tx_id": f"{uid}-bad", "amount": -5}), []),  # schema violation
        ("transactions", orjson.dumps({**good, "type": "refund"}), []),  # unknown event type
        ("applications", orjson.dumps({"client_id": f"{uid}-c"}), []),  # missing fields
        ("transactions", orjson.dumps(["not", "an", "object"]), []),
    ]
    await produce(
        s,
        [
            *bad,
            ("transactions", orjson.dumps(good), []),
            ("transactions", msgpack.packb(good_msgpack), [("content-type", b"application/msgpack")]),
        ],
    )
    consumer = ExtractorConsumer(s, store)
    stats = await consumer.run(idle_exit_s=2.0)
    assert stats.dead_letters == 5 and stats.messages == 7

    letters = await read_all(s, s.kafka.topic("dlq"), expected=5)
    assert len(letters) == 5
    by_value = {r.value: r for r in letters}
    for topic_key, value, _ in bad:
        letter = by_value[value]  # original bytes kept as they were
        assert header(letter.headers, "dlq.topic") == s.kafka.topic(topic_key)
        assert header(letter.headers, "dlq.offset") is not None and header(letter.headers, "dlq.partition") is not None
    reasons = {header(r.headers, "dlq.error"): header(r.headers, "dlq.reason") for r in letters}
    assert set(reasons) == {"malformed", "invalid", "unknown_type"}
    assert "amount" in by_value[bad[1][1]].headers[0][1].decode()
    assert "refund" in header(by_value[bad[2][1]].headers, "dlq.reason")

    rows = await store.get_features(f"{uid}-c")
    assert {(r.name, r.value) for r in rows} == {
        ("tx.out.amount", 10.5),
        ("tx.out.mcc.groceries", 10.5),
        ("tx.out.amount", 4.5),
        ("tx.out.mcc.groceries", 4.5),
    }


async def test_simulated_bank_lands_exactly_with_every_event_kind(
    kafka_settings: Settings,
    store: FeatureStore,
    uid: str,
) -> None:
    s = kafka_settings
    sim = BankSimulator(SimulationConfig(clients=12, days=60, seed=5, client_prefix=f"{uid}c"))
    events = list(sim.events())
    kinds = {topic for topic, _, _ in events}
    assert kinds == {"transactions", "transaction_deletes", "clients", "applications", "products"}
    await publish_events(s, events, progress=False)
    stats = await ExtractorConsumer(s, store).run(idle_exit_s=2.0)
    assert stats.messages == len(events) and stats.dead_letters == 0
    expected = await expected_state(s, events)
    await assert_store_equals(store, expected, sorted({key for _, key, _ in events}))


async def test_consumer_killed_mid_stream_and_restarted_leaves_the_same_store(
    kafka_settings: Settings,
    cluster: StoreCluster,
    settings: Settings,
    uid: str,
) -> None:
    s = kafka_settings
    events = await publish_simulated(s, f"{uid}k", clients=40, days=120, seed=11)
    cmd, env = consume_command(s)

    subjects = sorted({key for _, key, _ in events})
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        first = subprocess.Popen([*cmd], env=env, cwd=ROOT)  # noqa: ASYNC220
        try:
            # kill it once some, but not all, of the stream is in the store
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if await store.get_features(subjects[len(subjects) // 2], limit=1):
                    break
                await asyncio.sleep(0.05)
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait()
        landed = sum([len(await store.get_features(x, limit=100_000)) for x in subjects])
        second = subprocess.run([*cmd, "--idle-exit", "3"], env=env, cwd=ROOT, timeout=240)  # noqa: ASYNC221
        assert second.returncode == 0
        expected = await expected_state(s, events)
        total_expected = sum(len(expected.snapshot(x)) for x in subjects)
        assert 0 < landed < total_expected  # the kill really happened mid-stream
        await assert_store_equals(store, expected, subjects)


async def test_sigterm_finishes_the_batch_in_hand_and_commits(
    kafka_settings: Settings,
    cluster: StoreCluster,
    uid: str,
) -> None:
    s = kafka_settings
    events = await publish_simulated(s, f"{uid}t", clients=20, days=90, seed=13)
    cmd, env = consume_command(s)
    from tests.conftest import free_port_block

    metrics_port = free_port_block(1)
    env["RTREC_CONSUMER__METRICS_PORT"] = str(metrics_port)
    subjects = sorted({key for _, key, _ in events})
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)  # noqa: ASYNC220
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not await store.get_features(subjects[0], limit=1):
            await asyncio.sleep(0.05)
        import httpx

        exposed = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert "rtrec_consumer_messages_total" in exposed.text and "rtrec_consumer_lag_messages" in exposed.text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0  # a clean exit, not a kill
        lag_after_stop = await consumer_lag(s)
        # what was committed is in the store: restarting consumes only the rest, and the result is exact
        assert sum(lag_after_stop.values()) < len(events)
        rest = subprocess.run([*cmd, "--idle-exit", "3"], env=env, cwd=ROOT, timeout=240)  # noqa: ASYNC221
        assert rest.returncode == 0
        assert sum((await consumer_lag(s)).values()) == 0
        await assert_store_equals(store, await expected_state(s, events), subjects)
