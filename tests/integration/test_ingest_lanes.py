"""One replica set that cannot write holds back only its own clients' facts (extractors/lanes.py).

Before the write lanes, a consumer batch spanned every replica set and was held whole: with one master dead,
every client's facts went stale, the applications of clients on healthy replica sets included (their products
were offered again). The drill kills (or stalls) a master under the supervised consumers of a real broker and a
private cluster, and checks what lands, what `rtrec status` says, and that the store ends exactly once when the
master is back."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.offsets import consumer_lag
from feature_store.client import FeatureStore
from tests.integration.kafka_helpers import (
    assert_store_equals,
    expected_state,
    publish_simulated,
    stack_status,
    stop_process,
    supervise,
    wait_for,
)


@pytest.mark.parametrize(
    "fault",
    [
        signal.SIGKILL,  # connections refused at once
        signal.SIGSTOP,  # stalled: every write waits out the request timeout, status calls too
    ],
    ids=["killed", "stalled"],
)
async def test_a_replica_set_without_its_master_holds_back_only_its_own_clients(
    private_cluster: tuple[Settings, StoreCluster], uid: str, fault: signal.Signals
) -> None:
    settings, cluster = private_cluster
    down = cluster.topology[0]
    master = cluster.master_name(down)
    cluster.kill(master, fault)
    events = await publish_simulated(settings, f"{uid}l", clients=120, days=60, seed=43)
    expected = await expected_state(settings, events)
    supervisor = supervise(settings)
    try:
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            subjects = sorted({key for _, key, _ in events})
            on_down = [s for s in subjects if store.replicaset_of_bucket(store.bucket_id_for(s)).id == down.id]
            elsewhere = [s for s in subjects if s not in on_down]
            assert on_down and elsewhere

            async def others_landed() -> bool:
                try:
                    await assert_store_equals(store, expected, elsewhere)
                except AssertionError:
                    return False
                return True

            await wait_for(others_landed, timeout=120, what="the other replica set's clients to land", interval=1)

            async def hold_shown() -> dict[str, Any] | None:
                status = await asyncio.to_thread(stack_status, settings)
                problems = " | ".join(status["problems"])
                held = f"held the writes to replica set {down.id}" in problems
                shown = held and "the writes to the other replica sets go on" in problems
                return status if shown else None

            status = await wait_for(hold_shown, timeout=60, what="status to name the held replica set", interval=1)
            assert sum(status["consumers"]["lag"].values()) > 0  # nothing of a held replica set's is committed
            held = [c for c in status["consumers"]["processes"] if c["holds"]]
            assert held and all(c["alive"] and c["restarts"] == 0 for c in status["consumers"]["processes"])
            assert {h["what"] for c in held for h in c["holds"]} == {f"the writes to replica set {down.id}"}

            # the master comes back; the held lane goes on by itself
            if fault == signal.SIGSTOP:
                cluster.kill(master, signal.SIGCONT)
            else:
                await cluster.start()

            async def caught_up() -> bool:
                return sum((await consumer_lag(settings)).values()) == 0

            await wait_for(caught_up, timeout=120, what="the consumers to catch up", interval=1)
            await assert_store_equals(store, expected, subjects)
            status = await asyncio.to_thread(stack_status, settings)
            assert not [p for p in status["problems"] if "consumer-" in p], status["problems"]
        assert stop_process(supervisor) == 0
        supervisor = None
    finally:
        if supervisor is not None:
            stop_process(supervisor)
        cluster.kill(master, signal.SIGCONT)  # a stalled master must not outlive the drill stopped
