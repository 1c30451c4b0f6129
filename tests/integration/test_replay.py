"""Outage drill: a stream lands, a hole appears (what arrived in a window is lost from the store), the replay of
that arrival window closes it exactly; replays are idempotent; dry runs write nothing."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import asynctnt
import orjson
import pytest

from deploy.cluster import StoreCluster
from deploy.settings import TOPICS, Settings
from extractors.consumer import ExtractorConsumer
from extractors.decode import validate_event
from extractors.extract import ExtractionConfig, extract
from extractors.ops import AppendFeatures, DeleteObject, ReplaceSource, apply_ops
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from feature_store.specs import AggregateSpec
from feature_store.ttl import DAY
from replay.runner import ReplayJob
from replay.window import ReplayWindowError, validate_window
from tests.conftest import free_port_block, reference_state
from tests.integration.kafka_helpers import wait_for


async def _raw_master(store: FeatureStore, subject: str, settings: Settings) -> asynctnt.Connection:
    rs = store.replicaset_of_bucket(store.bucket_id_for(subject))
    master = await rs.discover_master()
    conn = asynctnt.Connection(
        host=master.spec.host, port=master.spec.port, username=settings.store.user, password=settings.store.password
    )
    await conn.connect()
    return conn


# A raw delete on the master, below the store's API: no tombstone, no cache invalidation.
DELETE_BY_NATURAL_KEY = """
local subject, name, object, source = ...
local dict = require('dict')
box.space.features:delete({subject, dict.find('name', name), object, dict.find('source', source)})
"""


async def _make_hole(store: FeatureStore, settings: Settings, lost: list[tuple[str, str, dict[str, Any]]]) -> int:
    """Lose what the events in ``lost`` did to the store, as a master restored from an older snapshot would:
    their features vanish (no tombstones), and the transactions they deleted come back."""
    config = ExtractionConfig(home_currency=settings.consumer.home_currency)
    removed = 0
    for topic_key, _, payload in lost:
        for op in extract(validate_event(TOPICS[topic_key], payload), config):
            if isinstance(op, AppendFeatures | ReplaceSource):
                for feature in op.features:
                    rows = await store.get_features(feature.subject, name=feature.name)
                    conn = await _raw_master(store, feature.subject, settings)
                    for row in rows:
                        if (row.source, row.object) == (feature.source, feature.object):
                            await conn.eval(DELETE_BY_NATURAL_KEY, [row.subject, row.name, row.object, row.source])
                            removed += 1
                    await conn.disconnect()
            elif isinstance(op, DeleteObject):
                conn = await _raw_master(store, op.subject, settings)
                await conn.delete("tombstones", [op.subject, op.object_id])
                await conn.disconnect()
    # the deleted transactions reappear (their own arrival was before the hole)
    for topic_key, _, payload in lost:
        if topic_key == "transaction_deletes":
            original = next(
                (p for t, _, p in ALL_EVENTS if t == "transactions" and p["tx_id"] == payload["tx_id"]), None
            )
            if original is not None:
                await apply_ops(store, extract(validate_event(TOPICS["transactions"], original), config))
    return removed


ALL_EVENTS: list[tuple[str, str, dict[str, Any]]] = []


async def _snapshot_all(store: FeatureStore, subjects: list[str]) -> dict[str, set[Any]]:
    out = {}
    for subject in subjects:
        rows = await store.get_features(subject, limit=100_000)
        out[subject] = {(r.source, r.name, r.object, r.value, r.time_use) for r in rows}
    return out


def test_bad_windows_are_refused() -> None:
    now = time.time()
    with pytest.raises(ReplayWindowError):
        validate_window(now - 10, now - 20, now)
    with pytest.raises(ReplayWindowError):
        validate_window(now - 10, now + 3600, now)
    validate_window(now - 3600, now, now)


async def test_outage_drill_replay_closes_the_hole_exactly(
    kafka_settings: Settings,
    cluster: StoreCluster,
    store: FeatureStore,
    uid: str,
) -> None:
    s = kafka_settings
    events = list(BankSimulator(SimulationConfig(clients=12, days=90, seed=17, client_prefix=f"{uid}o")).events())
    ALL_EVENTS[:] = events
    # arrival order: before, during and after the outage; the middle third carries every event kind
    third = len(events) // 3
    before, during, after = events[:third], events[third : 2 * third], events[2 * third :]
    assert {t for t, _, _ in during} >= {"transactions", "transaction_deletes", "clients", "applications", "products"}
    await publish_events(s, before, progress=False)
    await asyncio.sleep(0.05)  # not waiting for a condition: replay windows are broker arrival times (ms)
    outage_start = time.time()
    await publish_events(s, during, progress=False)
    outage_end = time.time()
    await asyncio.sleep(0.05)
    await publish_events(s, after, progress=False)
    await ExtractorConsumer(s, store).run(idle_exit_s=2.0)

    subjects = sorted({key for _, key, _ in events})
    reference = await reference_state(s, events)
    expected = {subject: reference.snapshot(subject) for subject in subjects}
    assert await _snapshot_all(store, subjects) == expected  # the run without an outage

    removed = await _make_hole(store, s, during)
    assert removed > 0
    assert await _snapshot_all(store, subjects) != expected  # the hole is real

    dry = await ReplayJob(s, store, outage_start, outage_end, dry_run=True).run()
    assert dry.state == "done" and dry.events == len(during) and dry.would_write_features > 0
    assert await _snapshot_all(store, subjects) != expected  # a dry run writes nothing

    job = await ReplayJob(s, store, outage_start, outage_end, max_events_per_s=20_000).run()
    assert job.state == "done", job.error
    assert job.offsets_done == job.offsets_total == len(during)
    assert await _snapshot_all(store, subjects) == expected

    again = await ReplayJob(s, store, outage_start, outage_end).run()  # idempotent
    assert again.state == "done" and again.features_written == 0
    assert await _snapshot_all(store, subjects) == expected

    # a replay of everything, older client data included, never overwrites newer data
    everything = await ReplayJob(s, store, outage_start - 3600, time.time()).run()
    assert everything.state == "done" and everything.features_written == 0
    assert await _snapshot_all(store, subjects) == expected
    assert orjson.dumps(job.as_dict())


async def test_replay_api_is_operator_only_and_validates_windows(
    kafka_settings: Settings,
    cluster: StoreCluster,
    uid: str,
) -> None:
    import httpx
    import uvicorn

    from manager.app import create_app

    s = kafka_settings.model_copy(
        update={"recommendations": kafka_settings.recommendations.model_copy(update={"audit_to_kafka": False})}
    )
    port = free_port_block(1)
    server = uvicorn.Server(uvicorn.Config(create_app(s), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    now = time.time()
    body = {"from": now - 600, "to": now}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            for key in ("dev-reader-key", "dev-writer-key"):
                refused = await api.post("/v1/replays", json=body, headers={"Authorization": f"Bearer {key}"})
                assert refused.status_code == 403
            operator = {"Authorization": "Bearer dev-operator-key"}
            backwards = await api.post("/v1/replays", json={"from": now, "to": now - 600}, headers=operator)
            assert backwards.status_code == 422 and "end after" in backwards.json()["detail"]
            future = await api.post("/v1/replays", json={"from": now, "to": now + 86400}, headers=operator)
            assert future.status_code == 422 and "future" in future.json()["detail"]
            bad_topic = await api.post("/v1/replays", json={**body, "topics": ["nope"]}, headers=operator)
            assert bad_topic.status_code == 422
            since_1970 = {"from": "1970-01-01T00:00:00Z", "to": "1970-01-02", "dry_run": True}
            assert (await api.post("/v1/replays", json=since_1970, headers=operator)).status_code == 202
            started = await api.post("/v1/replays", json={**body, "dry_run": True}, headers=operator)
            assert started.status_code == 202
            replay_id = started.json()["id"]
            for _ in range(100):
                state = (await api.get(f"/v1/replays/{replay_id}", headers=operator)).json()
                if state["state"] in ("done", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.1)
            assert state["state"] == "done" and state["dry_run"] and state["offsets_done"] == state["offsets_total"]
            assert (await api.get("/v1/replays/unknown", headers=operator)).status_code == 404
    finally:
        server.should_exit = True
        await task


def test_cli_replay_exit_codes(kafka_settings: Settings, cluster: StoreCluster) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT, settings_env

    env = {**__import__("os").environ, **settings_env(kafka_settings), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "deploy.cli", "replay", "--config", str(ROOT / "deploy" / "local.toml")]
    now = time.time()
    bad = subprocess.run([*cmd, "--from", str(now), "--to", str(now - 60)], env=env, cwd=ROOT, capture_output=True)
    assert bad.returncode == 2 and b"end after" in bad.stderr

    def dry_run_is_done(start: str, end: str) -> None:
        run = subprocess.run(
            [*cmd, "--from", start, "--to", end, "--dry-run"], env=env, cwd=ROOT, capture_output=True, timeout=120
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert orjson.loads(run.stdout)["state"] == "done"

    dry_run_is_done(str(now - 60), str(now))
    garbage = subprocess.run([*cmd, "--from", "yesterday", "--to", str(now)], env=env, cwd=ROOT, capture_output=True)
    assert garbage.returncode == 2 and b"neither ISO 8601 nor epoch" in garbage.stderr
    assert b"Traceback" not in garbage.stderr
    # the rebuild command of docs/operations.md starts at 1970 (it crashed on the event range's 2000 floor)
    dry_run_is_done("1970-01-01", "1970-01-02")


async def test_a_record_stamped_in_the_future_by_its_producer_hides_nothing_from_a_replay(
    kafka_settings: Settings,
) -> None:
    """Windows select by arrival time: a producer clock years ahead (CreateTime 2100) made Kafka's offset lookup
    answer that record for every later window, which then held nothing (a replay 'done' with 0 events)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from replay.window import offsets_for_window

    topic = kafka_settings.kafka.topic("transactions")
    partition = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka.bootstrap)
    await producer.start()
    try:
        before = time.time()
        await producer.send_and_wait(topic, b"{}", partition=0, timestamp_ms=4_102_444_700_000)  # 2099-12-31
        await producer.send_and_wait(topic, b"{}", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_settings.kafka.bootstrap)
    await consumer.start()
    try:
        [window] = await offsets_for_window(consumer, [partition], before - 5, time.time() + 5)
    finally:
        await consumer.stop()
    assert window.size == 2


async def test_a_client_version_ahead_of_its_arrival_is_refused_by_a_later_replay_too(
    kafka_settings: Settings, store: FeatureStore, uid: str
) -> None:
    """Event times were bounded by the clock when the record was processed: a client version stamped ahead of
    its arrival went to the dead letters live, and a replay run once that time had passed applied it; newest
    wins, so it beat every genuine update made in between. Bounded by the arrival the broker stamped, a replay
    decides as the live consumer did, however late it runs."""
    consumer = kafka_settings.consumer.model_copy(update={"max_ahead_s": 1.0})  # a skew of seconds, not hours
    s = kafka_settings.model_copy(update={"consumer": consumer})
    subject = f"{uid}-ahead"
    start = time.time()
    stamped = {"client_id": subject, "ts": start + 4, "segment": "sme", "birth_date": "1980-05-01"}
    await publish_events(s, [("clients", subject, stamped)], progress=False)
    await asyncio.sleep(max(0.0, start + 5 - time.time()))  # its time has passed: the clock no longer refuses it
    job = await ReplayJob(s, store, start - 1, time.time()).run()
    assert job.state == "done" and job.offsets_done == 1 and job.skipped_events == 1, job.as_dict()
    assert await store.get_features(subject) == []


async def test_any_api_worker_follows_and_cancels_a_replay_another_one_runs(
    kafka_settings: Settings, cluster: StoreCluster, uid: str, tmp_path: Any
) -> None:
    """The API runs two worker processes on one port by default: the status query or the cancel of a replay
    reached the worker that had not started it about half the time, and answered 404 (a cancel that missed left
    the replay running). Two registries over one run directory stand for the two workers."""
    from replay.registry import ReplayRegistry

    s = kafka_settings.model_copy(update={"run_dir": tmp_path})
    events = list(BankSimulator(SimulationConfig(clients=3, days=10, seed=5, client_prefix=f"{uid}w")).events())
    await publish_events(s, events[:40], progress=False)
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        runner, other = ReplayRegistry(s, store), ReplayRegistry(s, store)
        job = runner.start(
            time.time() - 600, time.time(), topics=None, subjects=None, dry_run=True, max_events_per_s=4.0
        )
        try:

            async def running_elsewhere() -> dict[str, Any] | None:
                progress = other.status(job.progress.id)
                return progress if progress and progress["state"] == "running" and progress["offsets_total"] else None

            progress = await wait_until(running_elsewhere, 20)
            assert progress["offsets_total"] == 40
            assert other.cancel(job.progress.id) is True

            async def cancelled_elsewhere() -> dict[str, Any] | None:
                progress = other.status(job.progress.id)
                return progress if progress and progress["state"] == "cancelled" else None

            progress = await wait_until(cancelled_elsewhere, 8)  # within the 10 s its rate would have taken
            assert other.status("0123456789ab") is None and other.status("../../etc/x") is None
            assert other.cancel("0123456789ab") is False
        finally:
            await runner.stop()


async def wait_until(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while (result := await condition()) is None:
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)
    return result


async def test_a_window_holding_a_first_version_but_not_its_correction_leaves_the_correction(
    kafka_settings: Settings, cluster: StoreCluster, store: FeatureStore, uid: str
) -> None:
    """An outage window ended before a transaction's correction arrived: the replay wrote the first version
    back over the correction the live consumer had applied, for good (a resend supersedes). Now the versions
    that arrived after the window are applied again after it: all of them when they are few, else only those
    of the window's transactions."""
    s = kafka_settings
    subject = f"{uid}-w"

    def transaction(tx_id: str, amount: float, mcc: int) -> tuple[str, str, dict[str, Any]]:
        event = {"tx_id": tx_id, "client_id": subject, "ts": 1_790_000_000, "amount": amount, "currency": "RUB"}
        return "transactions", subject, event | {"direction": "out", "mcc": mcc}

    async def rows(tx_id: str) -> dict[str, Any]:
        return {r.name: r.value for r in await store.get_features(subject) if r.object == tx_id}

    corrected = {"tx.out.amount": 80.0, "tx.out.mcc.restaurants": 80.0}
    # versions after the window: as many as in it (all applied again), then more (only the window's own); then a
    # replay cancelled after it wrote the first version: the correction is restored all the same
    for tx_id, others_after, applied_again, cancelled in (("t1", 1, 2, False), ("t2", 6, 1, False), ("t3", 0, 1, True)):
        start = time.time()
        await publish_events(s, [transaction(tx_id, 100.0, 5411), transaction(f"{tx_id}-other", 5.0, 5411)])
        end = time.time()
        await asyncio.sleep(0.05)
        later = [
            transaction(tx_id, 80.0, 5812),
            *(transaction(f"{tx_id}-u{i}", 1.0, 5411) for i in range(others_after)),
        ]
        await publish_events(s, later, progress=False)  # the same client: the same partition
        await ExtractorConsumer(s, store).run(idle_exit_s=2.0)
        assert await rows(tx_id) == corrected  # the live state

        replay = ReplayJob(s, store, start, end, max_events_per_s=0.5 if cancelled else None)
        running = asyncio.create_task(replay.run())
        if cancelled:  # in the throttle's wait after the window's first batch
            await wait_for(partial(_offsets_done, replay), timeout=30, what="a first batch")
            replay.cancel()
        job = await running
        assert job.state == ("cancelled" if cancelled else "done"), job.error
        assert await rows(tx_id) == corrected
        assert job.offsets_done == 2 and job.versions_after_window == applied_again


async def test_a_window_holding_client_data_corrected_under_the_same_time_leaves_the_correction(
    kafka_settings: Settings, store: FeatureStore, uid: str
) -> None:
    """Client data: the newest version wins, and a version as new as the stored one applies (it arrived later).
    A correction sent under the same time as the version it corrects arrived after the window, and the replay
    wrote the window's version back over it for good. Client versions after the window are applied again too."""
    s = kafka_settings
    subject = f"{uid}-c"
    version = {"client_id": subject, "ts": time.time() - 600, "segment": "retail", "birth_date": "1980-05-01"}
    start = time.time()
    await publish_events(s, [("clients", subject, version)], progress=False)
    end = time.time()
    await asyncio.sleep(0.05)
    await publish_events(s, [("clients", subject, version | {"segment": "sme"})], progress=False)
    await ExtractorConsumer(s, store).run(idle_exit_s=2.0)
    segment = AggregateSpec("last", "profile.segment")
    assert await store.aggregate(subject, [segment]) == ["sme"]  # the live state: the correction
    job = await ReplayJob(s, store, start, end).run()
    assert job.state == "done" and job.offsets_done == 1, job.as_dict()
    assert await store.aggregate(subject, [segment]) == ["sme"]
    assert job.versions_after_window == 1


async def test_a_window_holding_an_accounts_earlier_events_leaves_it_as_live_ingest_did(
    kafka_settings: Settings, store: FeatureStore, uid: str
) -> None:
    """A deposit opened, closed and opened again under one account, and an application submitted again under
    its id, the later events after the window: the replay wrote the window's opening back over the reopening
    (the deposit read as closed: offered to the client who holds it) and the old submission over the new one
    (older than the blocking period: the product offered while applied for). A reviewer's find (2026-12-07)."""
    s = kafka_settings
    subject = f"{uid}-acc"
    now = time.time()
    account = {"client_id": subject, "product": "deposit", "account_id": "D-1"}
    application = {"application_id": "A-1", "client_id": subject, "product": "consumer_loan", "status": "submitted"}
    start = time.time()
    await publish_events(
        s,
        [
            ("products", subject, account | {"action": "opened", "ts": now - 300 * DAY}),
            ("products", subject, account | {"action": "closed", "ts": now - 200 * DAY}),
            ("applications", subject, application | {"ts": now - 200 * DAY}),
        ],
        progress=False,
    )
    end = time.time()
    await asyncio.sleep(0.05)
    later = [
        ("products", subject, account | {"action": "opened", "ts": now - 10 * DAY}),
        ("applications", subject, application | {"ts": now - 5 * DAY}),
    ]
    await publish_events(s, later, progress=False)
    await ExtractorConsumer(s, store).run(idle_exit_s=2.0)
    facts = [
        AggregateSpec("last", "product.deposit.opened"),
        AggregateSpec("last", "product.deposit.closed"),
        AggregateSpec("count", "app.consumer_loan.submitted", 180 * DAY),
    ]
    live = await store.aggregate(subject, facts)
    assert live[0] == pytest.approx(now - 10 * DAY) and live[2] == 1  # held, and applied for
    job = await ReplayJob(s, store, start, end).run()
    assert job.state == "done" and job.offsets_done == 3, job.as_dict()
    assert await store.aggregate(subject, facts) == live
    assert job.versions_after_window == 2


async def _offsets_done(job: ReplayJob) -> int:
    return job.progress.offsets_done


async def test_a_partition_ending_in_a_transaction_marker_ends_the_replay(
    kafka_settings: Settings, cluster: StoreCluster, store: FeatureStore, uid: str
) -> None:
    """A producer writing in Kafka transactions leaves a commit marker after its records: an offset that is never
    returned as a record. A window ending at the partition's end waited for it for ever."""
    from aiokafka import AIOKafkaProducer

    s = kafka_settings
    subject = f"{uid}-txn"
    event = {"tx_id": "t1", "client_id": subject, "ts": 1_790_000_000, "amount": 5.0, "currency": "RUB"}
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, transactional_id=f"{uid}-producer")
    await producer.start()
    start = time.time()
    try:
        async with producer.transaction():
            await producer.send_and_wait(
                s.kafka.topic("transactions"), orjson.dumps(event | {"direction": "out"}), key=subject.encode()
            )
    finally:
        await producer.stop()
    await asyncio.sleep(0.05)  # the window ends after the marker arrived (arrival times are milliseconds)
    job = await asyncio.wait_for(ReplayJob(s, store, start, time.time()).run(), timeout=60)
    assert job.state == "done", job.error
    assert job.offsets_done == 1 and job.offsets_total == 2  # the record and its marker
    assert {r.name for r in await store.get_features(subject)} == {"tx.out.amount"}


async def test_a_version_the_live_consumer_applies_during_the_second_pass_is_not_undone(
    kafka_settings: Settings, cluster: StoreCluster, store: FeatureStore, uid: str
) -> None:
    """The pass over the versions after the window read up to the end as it began. A third version arriving
    then, applied by the live consumer before that pass wrote the second, was undone by it for good. The pass
    now runs again over what arrived during it."""
    s = kafka_settings
    subject = f"{uid}-r"

    def version(amount: float, mcc: int) -> tuple[str, str, dict[str, Any]]:
        event = {"tx_id": "t1", "client_id": subject, "ts": 1_790_000_000, "amount": amount, "currency": "RUB"}
        return "transactions", subject, event | {"direction": "out", "mcc": mcc}

    start = time.time()
    await publish_events(s, [version(100.0, 5411)], progress=False)
    end = time.time()
    await asyncio.sleep(0.05)
    await publish_events(s, [version(80.0, 5812)], progress=False)
    await ExtractorConsumer(s, store).run(idle_exit_s=2.0)

    class ThirdVersionDuringThePass(ReplayJob):
        published = False

        async def _reapply_later_versions(self, records: list[Any]) -> int:
            if not self.published:  # the live path takes a third version before this pass writes the second
                self.published = True
                await publish_events(s, [version(60.0, 5411)], progress=False)
                await ExtractorConsumer(s, store).run(idle_exit_s=2.0)
                assert (await _amounts(store, subject)) == {"tx.out.amount": 60.0, "tx.out.mcc.groceries": 60.0}
            return await super()._reapply_later_versions(records)

    job = await ThirdVersionDuringThePass(s, store, start, end).run()
    assert job.state == "done", job.error
    assert await _amounts(store, subject) == {"tx.out.amount": 60.0, "tx.out.mcc.groceries": 60.0}
    assert job.versions_after_window == 2 and job.offsets_after_window == 2


async def _amounts(store: FeatureStore, subject: str) -> dict[str, Any]:
    return {r.name: r.value for r in await store.get_features(subject) if r.object == "t1"}
