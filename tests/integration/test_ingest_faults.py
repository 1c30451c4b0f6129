"""Ingest never stops silently: fault drills against the real broker and a real cluster.

Hostile messages on every topic, a dead-letter topic that refuses writes, a store that runs out of memory,
consumers joining and leaving the group, killed and hung consumers under the supervisor; in each case the
drill asserts what `rtrec status` says and that the store ends equal to an exactly-once reference.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy import processes
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.consumer import ExtractorConsumer
from extractors.dlq import header
from extractors.health import read_state, state_path
from extractors.offsets import consumer_lag
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from tests.conftest import ROOT, private_settings, settings_env
from tests.integration.kafka_helpers import (
    assert_store_equals,
    consume_command,
    expected_state,
    produce,
    read_all,
    stack_status,
    stop_process,
    supervise,
    wait_for,
)

MSGPACK = [("content-type", b"application/msgpack")]
CONFIG = str(ROOT / "deploy" / "local.toml")


def hostile_messages() -> list[tuple[str, bytes | None, list[tuple[str, bytes]]]]:
    """(label, payload, headers): one of every shape the issue names."""
    return [
        ("unhashable type", b'{"type": [], "client_id": "x"}', []),
        ("msgpack array as key", b"\x81\x91\x01\x01", MSGPACK),
        ("msgpack integer keys", msgpack.packb({1: "a"}), MSGPACK),
        ("nesting bomb", b"[" * 50_000 + b"]" * 50_000, []),
        ("integer beyond range", b'{"client_id": "x", "ts": ' + b"9" * 400 + b"}", []),
        ("ts 1e300", b'{"client_id": "x", "tx_id": "t", "ts": 1e300}', []),
        ("negative epoch", b'{"client_id": "x", "tx_id": "t", "ts": -86400}', []),
        ("NaN through msgpack", msgpack.packb({"client_id": "x", "amount": math.nan, "ts": math.nan}), MSGPACK),
        ("invalid utf-8", b'{"client_id": "\xff\xfe"}', []),
        ("null value", None, []),
        ("empty object", b"{}", []),
        ("wrong content type", b'{"client_id": "x"}', [("content-type", b"text/xml")]),
        ("near the size limit", b'{"client_id": "' + b"x" * 1_000_000 + b'"}', []),
    ]


GOOD: dict[str, dict[str, Any]] = {
    "transactions": {"tx_id": "t1", "ts": 1790000000, "amount": 7.5, "currency": "RUB", "direction": "out"},
    "transaction_deletes": {"tx_id": "t-never", "ts": 1790000000},
    "clients": {"ts": 1790000000, "segment": "retail"},
    "applications": {"application_id": "a1", "product": "deposit", "status": "submitted", "ts": 1790000000},
    "products": {"product": "deposit", "action": "opened", "ts": 1790000000},
}


async def test_every_hostile_shape_on_every_topic_goes_to_the_dlq_and_the_next_event_lands(
    kafka_settings: Settings, store: FeatureStore, uid: str
) -> None:
    s = kafka_settings
    hostile = hostile_messages()
    messages: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = []
    for topic_key, good in GOOD.items():
        messages += [(topic_key, payload, headers) for _, payload, headers in hostile]
        messages.append((topic_key, orjson.dumps({**good, "client_id": f"{uid}-{topic_key}"}), []))
    await produce(s, messages)

    consumer = ExtractorConsumer(s, store)
    stats = await consumer.run(idle_exit_s=2.0)
    assert stats.messages == len(messages) and stats.dead_letters == len(hostile) * len(GOOD)

    letters = await read_all(s, s.kafka.topic("dlq"), expected=len(hostile) * len(GOOD))
    assert len(letters) == len(hostile) * len(GOOD)
    for letter in letters:
        reason, kind = header(letter.headers, "dlq.reason"), header(letter.headers, "dlq.error")
        assert reason and kind in {"malformed", "invalid", "unknown_type", "unsupported_content_type"}, (kind, reason)
        assert header(letter.headers, "dlq.topic") in {s.kafka.topic(t) for t in GOOD}
        assert header(letter.headers, "dlq.offset") is not None
        assert header(letter.headers, "dlq.sha256") or header(letter.headers, "dlq.value") == "null"
    truncated = [r for r in letters if header(r.headers, "dlq.truncated") == "payload"]
    assert len(truncated) == len(GOOD) and all("exceeds" in (header(r.headers, "dlq.reason") or "") for r in truncated)

    assert await store.get_features(f"{uid}-transactions")
    assert await store.get_features(f"{uid}-clients")
    assert await store.get_features(f"{uid}-applications")
    assert await store.get_features(f"{uid}-products")
    assert sum((await consumer_lag(s)).values()) == 0


async def _set_topic_config(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        await admin.close()


async def test_a_dead_letter_topic_that_refuses_writes_holds_the_batch_loudly_then_resumes(
    kafka_settings: Settings, store: FeatureStore, uid: str
) -> None:
    s = kafka_settings
    dlq = s.kafka.topic("dlq")
    await _set_topic_config(s, dlq, {"max.message.bytes": "100"})  # every dead letter is now too large
    good = {**GOOD["transactions"], "client_id": f"{uid}-c"}
    await produce(s, [("transactions", b"not json at all", []), ("transactions", orjson.dumps(good), [])])

    consumer = ExtractorConsumer(s, store)
    running = asyncio.create_task(consumer.run(idle_exit_s=10.0))
    later = [{**GOOD["transactions"], "client_id": f"{uid}-later", "tx_id": f"t{i}"} for i in range(20)]
    try:

        async def held() -> bool:
            return consumer.health.holding_stage == "dead_letters" and consumer.health.hold_attempts >= 2

        await wait_for(held, timeout=30, what="the dead-letter step to be held")
        assert "MessageSizeTooLarge" in (consumer.health.holding_cause or "")
        assert sum((await consumer_lag(s)).values()) == 2  # nothing committed while held
        assert not running.done()

        # the writes to the store go on while the dead letters wait (up to the bound of messages in hand)
        await produce(s, [("transactions", orjson.dumps(event), []) for event in later])

        async def landed() -> bool:
            return len(await store.get_features(f"{uid}-later")) == len(later)

        await wait_for(landed, timeout=30, what="later events to land while the dead letters are held")
        assert consumer.health.holding_stage == "dead_letters"
        assert sum((await consumer_lag(s)).values()) == 2 + len(later)  # still nothing committed

        await _set_topic_config(s, dlq, {"max.message.bytes": "1048588"})
        stats = await asyncio.wait_for(running, 60)
    finally:
        consumer.request_stop()
        await asyncio.gather(running, return_exceptions=True)
    assert stats.dead_letters == 1 and consumer.health.holding_stage is None
    letters = await read_all(s, dlq, expected=1)
    assert [header(r.headers, "dlq.error") for r in letters] == ["malformed"]
    assert sum((await consumer_lag(s)).values()) == 0
    assert [f.name for f in await store.get_features(f"{uid}-c")] == ["tx.out.amount"]
    assert len(await store.get_features(f"{uid}-later")) == len(later)


class _UndecodableKey(str):
    """A header key whose bytes are not UTF-8, as a librdkafka producer can send (aiokafka cannot read it)."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"trace\xff\xfe"


async def test_records_with_a_header_key_the_kafka_client_cannot_decode_are_read_and_nothing_is_skipped(
    kafka_settings: Settings, store: FeatureStore, uid: str, monkeypatch: Any
) -> None:
    """One batch of four records, two of them with a non-UTF-8 header key (as librdkafka can send): aiokafka's
    parser fails on the whole batch, the consumer re-reads it leniently and uses every record."""
    import aiokafka.producer.message_accumulator as accumulator
    import aiokafka.producer.producer as producer_module
    from aiokafka import AIOKafkaProducer
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

    s = kafka_settings
    tx = {t: {**GOOD["transactions"], "tx_id": t, "client_id": f"{uid}-{t}"} for t in ("t1", "t2", "t4")}
    bad_key = [(_UndecodableKey("k"), b"v")]
    batch = [(tx["t1"], []), (tx["t2"], bad_key), ({"client_id": "x"}, bad_key), (tx["t4"], [])]
    for module in (accumulator, producer_module):  # the pure-Python builder writes the key's own bytes
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all", linger_ms=200)
    await producer.start()
    try:
        futures = [
            await producer.send(s.kafka.topic("transactions"), orjson.dumps(event), key=b"one", headers=headers)
            for event, headers in batch
        ]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
        monkeypatch.undo()
    assert len({(m.partition, m.offset - i) for i, m in enumerate(sent)}) == 1  # one partition, consecutive

    stats = await ExtractorConsumer(s, store).run(idle_exit_s=3.0)
    assert stats.messages == 4 and stats.dead_letters == 1
    letters = await read_all(s, s.kafka.topic("dlq"), expected=1)
    assert [header(r.headers, "dlq.error") for r in letters] == ["invalid"]  # its payload, not its header
    assert "trace\ufffd\ufffd" in [key for key, _ in letters[0].headers]
    for t in tx:
        assert await store.get_features(f"{uid}-{t}"), t
    assert sum((await consumer_lag(s)).values()) == 0


async def test_a_store_out_of_memory_is_held_shown_in_status_and_lands_exactly_once_after_more_memory(
    kafka_settings: Settings, tmp_path_factory: Any, uid: str
) -> None:
    small = private_settings(kafka_settings, tmp_path_factory.mktemp("oom"), memtx_memory_mb=32)
    cluster = StoreCluster(small)
    await cluster.start()
    supervisor = None
    try:
        events = list(BankSimulator(SimulationConfig(clients=300, days=180, seed=31, client_prefix=f"{uid}m")).events())
        await publish_events(small, events, progress=False)
        supervisor = supervise(small)

        async def out_of_memory_shown() -> dict[str, Any] | None:
            status = await asyncio.to_thread(stack_status, small)
            problems = " | ".join(status["problems"])
            held = "held the writes to replica set" in problems and "StoreOutOfMemory" in problems
            return status if held and "refused writes for lack of memory" in problems else None

        status = await wait_for(out_of_memory_shown, timeout=120, what="status to show the full store", interval=1)
        consumers = status["consumers"]["processes"]  # whichever hit the full store first holds; none died
        assert all(c["alive"] and c["restarts"] == 0 for c in consumers)
        assert any((c["holding"] or {}).get("stage") == "store" for c in consumers)
        assert sum(status["consumers"]["lag"].values()) > 0

        # the operator restarts the store with more memory; the consumer goes on by itself
        cluster.stop()
        bigger = small.model_copy(update={"store": small.store.model_copy(update={"memtx_memory_mb": 160})})
        await StoreCluster(bigger).start()

        async def caught_up() -> bool:
            return sum((await consumer_lag(small)).values()) == 0

        await wait_for(caught_up, timeout=180, what="the consumer to catch up", interval=1)
        status = await asyncio.to_thread(stack_status, small)
        assert not [p for p in status["problems"] if "memory" in p or "held" in p or "consumer-" in p]
        assert all(c["restarts"] == 0 for c in status["consumers"]["processes"])
        subjects = sorted({key for _, key, _ in events})
        async with FeatureStore(bigger.store, topology=cluster.topology) as store:
            await assert_store_equals(store, await expected_state(small, events), subjects)
        assert stop_process(supervisor) == 0
        supervisor = None
    finally:
        if supervisor is not None:
            stop_process(supervisor)
        StoreCluster(small).stop()


def _health(settings: Settings, instance: int) -> dict[str, Any]:
    return read_state(state_path(settings.run_dir, instance)) or {}


async def test_consumers_joining_and_leaving_the_group_during_ingest_lose_and_double_nothing(
    kafka_settings: Settings, cluster: StoreCluster, uid: str, tmp_path: Path
) -> None:
    s = kafka_settings.model_copy(update={"run_dir": tmp_path})  # state files of this test's consumers only
    events = list(BankSimulator(SimulationConfig(clients=60, days=150, seed=17, client_prefix=f"{uid}g")).events())
    thirds = [
        events[: len(events) // 3],
        events[len(events) // 3 : 2 * len(events) // 3],
        events[2 * len(events) // 3 :],
    ]
    cmd, env = consume_command(s)
    await publish_events(s, thirds[0], progress=False)
    first = subprocess.Popen([*cmd, "--instance", "1"], env=env, cwd=ROOT)  # noqa: ASYNC220
    second = None
    try:

        async def first_working() -> bool:
            return _health(s, 1).get("pid") == first.pid and (_health(s, 1).get("messages") or 0) > 0

        await wait_for(first_working, timeout=60, what="the first consumer to apply a batch")
        second = subprocess.Popen([*cmd, "--instance", "2"], env=env, cwd=ROOT)  # noqa: ASYNC220

        async def both_in_group() -> bool:
            assert second is not None
            joined = _health(s, 2).get("pid") == second.pid and _health(s, 2).get("state") == "running"
            return joined and (_health(s, 1).get("rebalances") or 0) >= 1

        await wait_for(both_in_group, timeout=60, what="the second consumer to join")
        await publish_events(s, thirds[1], progress=False)

        async def second_working() -> bool:
            return (_health(s, 2).get("messages") or 0) > 0

        await wait_for(second_working, timeout=60, what="the second consumer to apply a batch")
        rebalances_before_leave = _health(s, 1)["rebalances"]
        assert await asyncio.to_thread(stop_process, second) == 0  # leaves the group cleanly
        second = None
        await publish_events(s, thirds[2], progress=False)

        async def caught_up() -> bool:
            return sum((await consumer_lag(s)).values()) == 0

        await wait_for(caught_up, timeout=120, what="the group to catch up", interval=0.5)
        assert _health(s, 1)["rebalances"] > rebalances_before_leave
        assert first.poll() is None  # survived every rebalance
        assert await asyncio.to_thread(stop_process, first) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    subjects = sorted({key for _, key, _ in events})
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        await assert_store_equals(store, await expected_state(s, events), subjects)


def _status_cli(settings: Settings) -> dict[str, Any]:
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "status", "--json", "--config", CONFIG],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


async def test_status_shows_the_true_lag_of_a_backlog_and_zero_once_applied(
    kafka_settings: Settings, store: FeatureStore, uid: str, tmp_path: Path
) -> None:
    s = kafka_settings.model_copy(update={"run_dir": tmp_path})
    events = list(BankSimulator(SimulationConfig(clients=5, days=30, seed=3, client_prefix=f"{uid}l")).events())
    counts = await publish_events(s, events, progress=False)
    before = await asyncio.to_thread(_status_cli, s)
    assert before["consumers"]["lag"] == {s.kafka.topic(key): n for key, n in counts.items()}
    assert any("consumer-1 is not running" in p for p in before["problems"])
    await ExtractorConsumer(s, store).run(idle_exit_s=2.0)
    after = await asyncio.to_thread(_status_cli, s)
    assert set(after["consumers"]["lag"].values()) == {0}
    instance = after["store"]["replicasets"][0]["instances"][0]
    assert instance["alive"] and 0 < instance["memory_used_ratio"] < 1 and instance["role"] in {"master", "replica"}


async def test_the_supervisor_restarts_a_killed_and_a_hung_consumer(
    kafka_settings: Settings, store: FeatureStore, uid: str, tmp_path: Path
) -> None:
    s = kafka_settings.model_copy(update={"run_dir": tmp_path})
    supervisor = supervise(
        s, RTREC_CONSUMER__HUNG_AFTER_S="4", RTREC_CONSUMER__RESTART_BACKOFF_MAX_S="1", RTREC_CONSUMER__INSTANCES="1"
    )
    try:

        async def running_pid() -> int | None:
            health = _health(s, 1)
            pid = processes.read_pid(s.run_dir / "procs" / "consumer-1.pid")  # None while it is being written
            fresh = health.get("pid") == pid and time.time() - health.get("updated_at", 0) < 2
            return pid if fresh and health.get("state") == "running" else None

        first = await wait_for(running_pid, timeout=60, what="the consumer to run")
        os.kill(first, signal.SIGKILL)

        async def replaced(old: int) -> int | None:
            pid = await running_pid()
            return pid if pid not in (None, old) else None

        second = await wait_for(lambda: replaced(first), timeout=60, what="a restart after SIGKILL")
        os.kill(second, signal.SIGSTOP)  # hung: alive, silent
        third = await wait_for(lambda: replaced(second), timeout=60, what="a restart of the hung consumer")

        supervised = json.loads((s.run_dir / "procs" / "supervisor.json").read_text())["consumers"][0]
        assert supervised["restarts"] == 2 and "not responding" in supervised["last_exit_reason"]
        status = await asyncio.to_thread(stack_status, s)
        assert any("consumer-1 restarted 2 times" in p for p in status["problems"]), status["problems"]

        await produce(s, [("transactions", orjson.dumps({**GOOD["transactions"], "client_id": f"{uid}-s"}), [])])

        async def landed() -> bool:
            return bool(await store.get_features(f"{uid}-s"))

        await wait_for(landed, timeout=60, what="an event to land through the restarted consumer")
        supervisor.kill()  # even a supervisor killed outright takes its consumer with it

        async def consumer_gone() -> bool:
            try:
                os.kill(third, 0)
            except ProcessLookupError:
                return True
            return False

        await wait_for(consumer_gone, timeout=40, what="the orphaned consumer to stop")
    finally:
        stop_process(supervisor)


async def _send_version(s: Settings, subjects: dict[int, str], amount: float, mcc: int) -> None:
    """One version of one transaction per subject, each to its own partition of the transactions topic."""
    from aiokafka import AIOKafkaProducer

    topic = s.kafka.topic("transactions")
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for partition, subject in subjects.items():
            event = {"tx_id": f"{subject}-t", "client_id": subject, "ts": 1_790_000_000, "amount": amount}
            event |= {"currency": "RUB", "direction": "out", "mcc": mcc}
            await producer.send_and_wait(topic, orjson.dumps(event), key=subject.encode(), partition=partition)
    finally:
        await producer.stop()


async def _rows(store: FeatureStore, subject: str) -> dict[str, Any]:
    return {f.name: f.value for f in await store.get_features(subject)}


async def test_a_batch_held_through_a_rebalance_never_undoes_what_the_next_owner_wrote(
    kafka_settings: Settings, cluster: StoreCluster, uid: str
) -> None:
    """A consumer holds a batch through a store outage; a second one joins and takes half the partitions. Before,
    the first one wrote its held batch once the store was back, after the new owner had applied a transaction's
    correction: the first version came back for good (a resend supersedes, and nobody reads that offset again).
    Now a revocation waits ``revoke_drain_s`` for the batches in hand, then marks them never to be written."""
    from feature_store.errors import StoreUnavailable

    s = kafka_settings.model_copy(
        # past aiokafka's default rejoin deadline (10 s): the broker must wait for the drain, not move on without it
        update={"consumer": kafka_settings.consumer.model_copy(update={"revoke_drain_s": 12.0})}
    )
    topic = s.kafka.topic("transactions")
    # the range assignor gives each of two members half of the partitions: one of the first and the last moves
    last = s.kafka.partitions_for(topic) - 1
    assert last >= 1
    subjects = {0: f"{uid}-p0", last: f"{uid}-p{last}"}

    async def send(amount: float, mcc: int) -> None:
        await _send_version(s, subjects, amount, mcc)

    await send(100.0, 5411)  # first version: groceries
    outage = True
    async with (
        FeatureStore(s.store, topology=cluster.topology) as held,
        FeatureStore(s.store, topology=cluster.topology) as healthy,
    ):
        put = held.put_features

        async def put_unless_away(features: Any, fence: Any = None) -> Any:
            if outage:
                raise StoreUnavailable("drill: the store is away")
            return await put(features, fence)

        held.put_features = put_unless_away  # type: ignore[method-assign]
        first = ExtractorConsumer(s, held)
        running = [asyncio.create_task(first.run())]
        try:
            await wait_for(
                lambda: asyncio.sleep(0, first.health.holding_since), timeout=60, what="the first consumer to hold"
            )
            second = ExtractorConsumer(s, healthy)
            running.append(asyncio.create_task(second.run()))

            async def moved() -> str | None:  # the subject whose partition the second consumer took
                owned = second._consumer.assignment() if second._consumer is not None else set()
                taken = {tp.partition for tp in owned if tp.topic == topic}
                return next((subject for p, subject in subjects.items() if p in taken), None)

            subject = await wait_for(moved, timeout=60, what="a partition to move to the second consumer")
            await send(80.0, 5812)  # the correction: another amount, restaurants

            async def corrected() -> bool:
                return (await _rows(healthy, subject)).get("tx.out.amount") == 80.0

            await wait_for(corrected, timeout=60, what="the new owner to apply the correction")
            outage = False

            async def caught_up() -> bool:
                return sum((await consumer_lag(s)).values()) == 0 and first.health.holding_since is None

            await wait_for(caught_up, timeout=60, what="both consumers to catch up", interval=0.5)
            await asyncio.sleep(1.0)
            for subject in subjects.values():
                assert await _rows(healthy, subject) == {"tx.out.amount": 80.0, "tx.out.mcc.restaurants": 80.0}
            assert first.health.rebalances >= 1
        finally:
            for consumer in (first, *([second] if len(running) > 1 else [])):
                consumer.request_stop()
            await asyncio.gather(*running, return_exceptions=True)


async def test_a_write_that_arrives_after_its_partition_moved_is_fenced_off(
    kafka_settings: Settings, cluster: StoreCluster, uid: str
) -> None:
    """A consumer is cut off from the store; its first write sits in the network (a TCP retransmission queue
    keeps it for minutes), the rebalance marks its batch never to be written, and the partition's next owner
    applies the first version and its correction. Then the network heals and the old request arrives. Before,
    the store took it: the first version came back over the correction for good. Now it carries the group
    generation it was sent in, and the replica set where the newer generation wrote refuses it."""
    from feature_store.errors import Fenced, StoreUnavailable

    s = kafka_settings.model_copy(
        update={"consumer": kafka_settings.consumer.model_copy(update={"revoke_drain_s": 3.0})}
    )
    topic = s.kafka.topic("transactions")
    last = s.kafka.partitions_for(topic) - 1
    subjects = {0: f"{uid}-p0", last: f"{uid}-p{last}"}
    await _send_version(s, subjects, 100.0, 5411)  # first version: groceries
    healed = asyncio.Event()
    in_the_network: list[asyncio.Task[Any]] = []
    async with (
        FeatureStore(s.store, topology=cluster.topology) as cut_off,
        FeatureStore(s.store, topology=cluster.topology) as healthy,
    ):
        put = cut_off.put_features

        async def put_across_a_partition(features: Any, fence: Any = None) -> Any:
            if healed.is_set():
                return await put(features, fence)
            if not in_the_network:  # the first request is delayed, not lost; later ones find no route
                sent = list(features)

                async def arrive_late() -> Any:
                    await healed.wait()
                    return await put(sent, fence)

                in_the_network.append(asyncio.create_task(arrive_late()))
            raise StoreUnavailable("drill: no route to the store")

        cut_off.put_features = put_across_a_partition  # type: ignore[method-assign]
        first = ExtractorConsumer(s, cut_off)
        running = [asyncio.create_task(first.run())]
        try:
            await wait_for(lambda: asyncio.sleep(0, bool(in_the_network)), timeout=60, what="a request in the network")
            second = ExtractorConsumer(s, healthy)
            running.append(asyncio.create_task(second.run()))

            async def moved() -> str | None:
                owned = second._consumer.assignment() if second._consumer is not None else set()
                taken = {tp.partition for tp in owned if tp.topic == topic}
                return next((subject for p, subject in subjects.items() if p in taken), None)

            subject = await wait_for(moved, timeout=60, what="a partition to move to the second consumer")
            await _send_version(s, subjects, 80.0, 5812)  # the correction: another amount, restaurants

            async def corrected() -> bool:
                return (await _rows(healthy, subject)).get("tx.out.amount") == 80.0

            await wait_for(corrected, timeout=60, what="the new owner to apply the correction")
            healed.set()
            late = (await asyncio.gather(*in_the_network, return_exceptions=True))[0]
            assert isinstance(late, Fenced), f"the late request was taken: {late!r}"

            async def caught_up() -> bool:
                return sum((await consumer_lag(s)).values()) == 0 and first.health.holding_since is None

            await wait_for(caught_up, timeout=60, what="both consumers to catch up", interval=0.5)
            for name in subjects.values():
                assert await _rows(healthy, name) == {"tx.out.amount": 80.0, "tx.out.mcc.restaurants": 80.0}
        finally:
            healed.set()
            for consumer in (first, *([second] if len(running) > 1 else [])):
                consumer.request_stop()
            await asyncio.gather(*running, *in_the_network, return_exceptions=True)


async def test_a_group_created_anew_takes_over_the_fences_of_the_old_one(
    kafka_settings: Settings, cluster: StoreCluster, uid: str
) -> None:
    """A consumer group whose offsets expired, or a new broker cluster, numbers its generations from 1 again,
    below the fences the old group left in the store: without proof to the broker that its generation is the
    current one and a forced fence, every write of the new group would be refused for good."""
    from feature_store.records import Fence

    s = kafka_settings
    topic = s.kafka.topic("transactions")
    subjects = {p: f"{uid}-p{p}" for p in range(s.kafka.partitions_for(topic))}
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        old_fences = tuple(f"{s.consumer.group_id}/{topic}/{p}" for p in subjects)
        for subject in subjects.values():  # the old group's generation 1000 wrote on every replica set
            await store.put_features(tx_rows(subject), Fence(old_fences, 1000))
        await _send_version(s, subjects, 80.0, 5812)
        consumer = ExtractorConsumer(s, store)
        running = asyncio.create_task(consumer.run())
        try:

            async def landed() -> bool:
                rows = [await _rows(store, subject) for subject in subjects.values()]
                return all(r.get("tx.out.amount") == 80.0 for r in rows)

            await wait_for(landed, timeout=60, what="the new group's writes to land")
        finally:
            consumer.request_stop()
            await asyncio.gather(running, return_exceptions=True)


def tx_rows(subject: str) -> list[Any]:
    from feature_store.records import Feature

    return [Feature(subject, "transactions", "tx.out.amount", f"{subject}-old", 1.0, 1_780_000_000.0)]
