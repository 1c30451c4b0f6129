"""Attacks on the cached answer inside the hedged client read, on a private cluster: replicas never answer from
the cache even when asked with it; a cached answer is dropped by an application and by a product opened, and
never served again (the next answer does not offer the product); a master stalled while holding a cached
answer is hedged to a fresh replica within the budget and nothing is cached from it; a cache-hit read carries
no facts, and the service never puts with it.

Instances are stopped with SIGSTOP and resumed in every test's cleanup."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from extractors.direct import load_events
from feature_store.serving import ServingStore
from tests.integration.kafka_helpers import background_done
from tests.integration.test_no_fails_under_faults import (
    APPLIED,
    BUDGET_S,
    HELD,
    MARGIN_S,
    NOT_FOR_RETAIL,
    Drill,
    drill_fixtures,
    offered,
)


class PutSpy:
    """Wraps ``ServingStore.cache_put`` to record the reads puts are made with."""

    def __init__(self, serving: ServingStore) -> None:
        self.reads: list[Any] = []
        self.inner = serving.cache_put

        async def put(subject: str, payload: Any, ttl_s: float, read: Any) -> bool:
            self.reads.append(read)
            return await self.inner(subject, payload, ttl_s, read)

        serving.cache_put = put  # type: ignore[method-assign]


drill, faults = drill_fixtures("ca")


async def cached_now(d: Drill) -> dict[str, Any]:
    """Make sure the master holds a cached answer for the client and return it as served."""
    await d.service.serving.cache_invalidate(d.client_id)
    await d.answer()
    await background_done(d.service)
    hit = await d.answer()
    assert hit["cached"] and hit["facts_source"] == "cache", hit
    return hit


async def test_replicas_never_answer_from_the_cache_even_when_asked(faults: Drill) -> None:
    await cached_now(faults)
    await faults.cluster.wait_synced()  # the replicas hold every fact the master holds (not its cache)
    store, client = faults.store, faults.client_id
    bucket = store.bucket_id_for(client)
    rs = store.replicaset_of_bucket(bucket)
    wire = [s.wire for s in faults.service._status_specs(faults.service.catalogue())]
    now = time.time()
    seen = 0
    for instance in rs.instances:
        answer = await instance.call("client_read", [bucket, client, now, wire, False, True], timeout=2.0)
        if answer.get("ro"):
            seen += 1
            assert "cached" not in answer and len(answer["values"]) == len(wire), instance.spec.name
        else:
            assert answer.get("cached") is not None  # the master does answer from it
    assert seen == len(rs.instances) - 1


@pytest.mark.parametrize("event", ["application", "opened"])
async def test_a_status_change_drops_the_cached_answer_and_the_product_is_never_offered_again(
    faults: Drill, event: str
) -> None:
    hit = await cached_now(faults)
    product = next(p for p in (item["product"] for item in hit["items"]) if p not in {HELD, APPLIED})
    client, now = faults.client_id, time.time()
    if event == "application":
        change = ("applications", client, {"application_id": f"{client}-{uuid.uuid4().hex[:4]}",
                                           "client_id": client, "product": product, "status": "submitted",
                                           "ts": now})  # fmt: skip
    else:
        change = ("products", client, {"client_id": client, "product": product, "action": "opened", "ts": now})
    await load_events(faults.store, [change])
    for _ in range(3):  # neither the next answer nor one served from a cache put after it offers the product
        answer = await faults.answer(limit=20)
        assert product not in offered(answer), (event, answer)
        assert not offered(answer) & {HELD, APPLIED, *NOT_FOR_RETAIL}
        await background_done(faults.service)
    assert answer["cached"]  # the fresh answer was cached again, made after the change


async def test_a_stalled_master_holding_a_cached_answer_is_hedged_within_the_budget(faults: Drill) -> None:
    await cached_now(faults)
    spy = PutSpy(faults.service.serving)
    master, *_ = faults.names()
    faults.stall(master)
    answer = await faults.answer()  # asserts the budget
    assert answer["facts_source"].startswith("replica ") and not answer["cached"]
    assert offered(answer) and not offered(answer) & {HELD, APPLIED, *NOT_FOR_RETAIL}
    faults.resume_all()
    await background_done(faults.service)
    assert all(read.cached is None for read in spy.reads)  # a replica read is offered to cache_put, which refuses it
    await faults.service.serving.cache_invalidate(faults.client_id)  # the cached answer made before the stall
    after = await faults.answer()
    assert not after["cached"] and after["facts_source"] == "master"


async def test_a_cache_hit_read_carries_no_facts_and_the_service_never_puts_with_one(faults: Drill) -> None:
    await cached_now(faults)
    serving, client = faults.service.serving, faults.client_id
    specs = faults.service._specs(faults.service.catalogue())
    hit = await serving.read_client(client, specs, time.time(), timeout=1.0, with_cache=True)
    assert hit.cached is not None and hit.values == [] and hit.source == "master"
    with pytest.raises(ValueError):  # its empty values can never be turned into "holds nothing"
        faults.service._snapshot(client, time.time(), faults.service.catalogue(), hit, status_only=False)
    spy = PutSpy(serving)
    for _ in range(3):
        started = time.perf_counter()
        answer = await faults.service.recommend(client, limit=9)
        assert time.perf_counter() - started < BUDGET_S + MARGIN_S
        assert answer["cached"]
    await background_done(faults.service)
    assert spy.reads == []


async def test_a_model_version_change_is_not_served_from_the_cache(faults: Drill) -> None:
    hit = await cached_now(faults)
    spy = PutSpy(faults.service.serving)
    registry = faults.service.registry
    expert = registry.current.expert
    old = expert.version
    expert.version = f"{old}-v2"  # as a hot reload of another expert version would
    try:
        answer = await faults.answer()
        assert not answer["cached"] and answer["model_versions"] != hit["model_versions"]
        assert not offered(answer) & {HELD, APPLIED, *NOT_FOR_RETAIL}
        await background_done(faults.service)
        assert spy.reads and all(read.cached is None and read.values for read in spy.reads)
    finally:
        expert.version = old  # type: ignore[misc]
        await faults.service.serving.cache_invalidate(faults.client_id)
