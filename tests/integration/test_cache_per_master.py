"""The recommendation cache is each master's own memory (a temporary space, lua/cache.lua), on a private
cluster: caching an answer writes nothing to the WAL (so nothing is replicated); a put computed from a read on a
replica is refused on the master; answers cached before the master was demoted and promoted again are never
served after it, and a put computed from a read before that is refused; a row written elsewhere and replicated
to the master drops its cached answers; no put lands while a clearing of the client waits for the WAL, on a
rollback as on the procedures' own commit. (Found by a review of the change: the last two were holes of the
first version.)"""

from __future__ import annotations

import time
from typing import Any

import asynctnt

from feature_store.serving import ClientRead
from tests.integration.kafka_helpers import background_done
from tests.integration.test_no_fails_under_faults import Drill, drill_fixtures
from tests.integration.test_serving_cache_attacks import cached_now

drill, faults = drill_fixtures("cm")


def _wire(d: Drill) -> list[Any]:
    return [s.wire for s in d.service._specs(d.service.catalogue())]


async def _read(d: Drill) -> ClientRead:
    specs = d.service._specs(d.service.catalogue())
    return await d.service.serving.read_client(d.client_id, specs, time.time(), timeout=1.0)


async def _master(d: Drill) -> Any:
    rs = d.store.replicaset_of_bucket(d.store.bucket_id_for(d.client_id))
    for instance in rs.instances:
        if not (await d.cluster.call_instance(instance.spec, "stats", [], timeout=2.0))["ro"]:
            return instance.spec
    raise AssertionError("no writable instance")


async def test_caching_an_answer_writes_nothing_to_the_wal(faults: Drill) -> None:
    master = await _master(faults)
    before = (await faults.cluster.call_instance(master, "stats", [], timeout=2.0))["vclock"]
    await cached_now(faults)  # an invalidation (through the API: no WAL either), a full answer, its put, a hit
    after = (await faults.cluster.call_instance(master, "stats", [], timeout=2.0))["vclock"]
    assert after == before


async def test_a_put_computed_from_a_replicas_read_is_refused(faults: Drill) -> None:
    store, client = faults.store, faults.client_id
    bucket = store.bucket_id_for(client)
    replicas = [i for i in store.replicaset_of_bucket(bucket).instances if i.spec != await _master(faults)]
    for replica in replicas:
        answer = await replica.call("client_read", [bucket, client, time.time(), _wire(faults), False, False], 2.0)
        read = ClientRead(list(answer["values"]), str(answer["status_gen"]), float(answer["read_at"]), "replica")
        assert await faults.service.serving.cache_put(client, {"items": []}, 60, read) is False
    assert await faults.service.serving.cache_put(client, {"items": []}, 60, await _read(faults)) is True
    await faults.service.serving.cache_invalidate(client)


async def test_nothing_cached_before_a_mastership_change_survives_it(faults: Drill) -> None:
    await cached_now(faults)
    before = await _read(faults)
    master = await _master(faults)
    await faults.cluster.call_instance(master, "demote", [], timeout=5.0)
    epoch = int((await faults.cluster.call_instance(master, "ping", [], timeout=2.0))["epoch"]) + 1
    await faults.cluster.call_instance(master, "promote", [epoch], timeout=10.0)

    # while it was read-only, status changes could have been written on another master: nothing from before
    answer = await faults.answer()
    assert not answer["cached"] and answer["facts_source"] == "master"
    assert await faults.service.serving.cache_put(faults.client_id, {"items": []}, 60, before) is False
    await background_done(faults.service)
    assert (await faults.answer())["cached"]  # and the cache works again from then on


async def _eval(d: Drill, spec: Any, code: str, *args: Any) -> Any:
    """Lua on one instance as the store's admin user (what an operator's console could do)."""
    conn = asynctnt.Connection(
        host=spec.host, port=spec.port, username=d.cluster.store.user, password=d.cluster.store.password
    )
    await conn.connect()
    try:
        return (await conn.eval(code, list(args), timeout=5.0)).body
    finally:
        await conn.disconnect()


async def test_a_row_written_elsewhere_and_replicated_to_the_master_drops_its_cached_answers(faults: Drill) -> None:
    """After a failover the old master's last rows can still reach the new one through a replica: they were
    not written by this master's procedures, so they cleared nothing here. Any such row makes the cache forget."""
    await cached_now(faults)
    master = await _master(faults)
    replica = next(spec for spec in faults.replicaset.instances if spec != master)
    await _eval(
        faults,
        replica,
        "box.cfg{read_only = false} box.space.bucket_moves:replace{...} box.cfg{read_only = true}",
        f"foreign-{faults.client_id}",
        1,
        time.time(),
    )
    await faults.cluster.wait_synced()
    answer = await faults.answer()
    assert not answer["cached"] and answer["facts_source"] == "master"
    await background_done(faults.service)
    assert (await faults.answer())["cached"]  # cached again once nothing new arrives


async def test_no_put_while_a_clearing_of_the_client_waits_for_the_wal(faults: Drill) -> None:
    """A clearing inside a write transaction holds puts off until the transaction ends (a put on the temporary
    space would commit at once, over the row a failed WAL write must restore); a rolled-back one lets them in."""
    read = await _read(faults)
    master = await _master(faults)
    bucket = faults.store.bucket_id_for(faults.client_id)
    during, after = await _eval(
        faults,
        master,
        """
        local cache, subject, bucket, gen, read_at = require('cache'), ...
        box.begin()
        cache.invalidate(subject, bucket)
        local held = cache.hold()  -- what counts.commit() does right before box.commit() waits for the WAL
        local during = cache.cache_put(bucket, subject, read_at + 60, {items = {}}, cache.gen_of(subject), read_at)
        box.rollback()  -- the WAL write failed
        cache.release(held)
        local after = cache.cache_put(bucket, subject, read_at + 60, {items = {}}, gen, read_at)
        return during, after
        """,
        faults.client_id,
        bucket,
        read.status_gen,
        read.read_at,
    )
    assert during is False  # refused although it carried the gen of that very moment
    assert after is True  # the rollback restored the client's gen, and the read made before it is good again
    await faults.service.serving.cache_invalidate(faults.client_id)


async def test_a_write_waiting_for_the_wal_holds_puts_for_the_clients_it_cleared(faults: Drill) -> None:
    """The procedures' commit (counts.commit) holds the clients a transaction cleared while box.commit waits for
    the WAL, and lets them go when it is durable."""
    master = await _master(faults)
    bucket = faults.store.bucket_id_for(faults.client_id)
    # the WAL may be quick: try until the put lands while the writer is still inside its commit
    caught, wrongly_taken, after = await _eval(
        faults,
        master,
        """
        local cache, fiber, subject, bucket = require('cache'), require('fiber'), ...
        local caught, wrongly_taken = 0, 0
        for attempt = 1, 50 do
            local committing = false
            local writer = fiber.new(function()
                box.begin()
                box.space.bucket_moves:replace({'wal-wait-' .. subject, bucket, fiber.time()})  -- goes to the WAL
                cache.invalidate(subject, bucket)
                committing = true
                require('counts').commit()  -- yields only here, waiting for the WAL
                committing = false
            end)
            writer:set_joinable(true)
            fiber.yield()
            if committing then
                caught = caught + 1
                local gen = cache.gen_of(subject)
                if cache.cache_put(bucket, subject, fiber.time() + 60, {items = {}}, gen, fiber.time()) then
                    wrongly_taken = wrongly_taken + 1
                end
            end
            writer:join()
        end
        local after = cache.cache_put(bucket, subject, fiber.time() + 60, {items = {}}, cache.gen_of(subject),
            fiber.time())
        return caught, wrongly_taken, after
        """,
        faults.client_id,
        bucket,
    )
    assert caught >= 1 and wrongly_taken == 0 and after is True
    await faults.service.serving.cache_invalidate(faults.client_id)
