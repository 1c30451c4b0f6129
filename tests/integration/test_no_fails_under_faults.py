""" "No fails" under faults: with masters stalled, whole replica sets stalled, a replica lagging behind an
application, or the store down, an answer never offers a product the client holds, applied for or cannot get.
Either the facts come from a copy that shows it is fresh, or the answer is empty and degraded with a reason.

Runs on a private cluster (instances are stopped with SIGSTOP and resumed in every test's cleanup)."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.direct import load_events
from feature_store.client import FeatureStore
from feature_store.serving import ServingStore
from manager.recommend import RecommendationService
from recommenders.catalogue import CatalogueFile, Rule
from recommenders.profile import FeatureSpace
from recommenders.registry import ModelRegistry
from tests.conftest import ROOT, private_settings
from tests.integration.kafka_helpers import background_done

BUDGET_S = 0.5
MARGIN_S = 0.1  # event loop and test overhead on a loaded 2-core machine
HELD, APPLIED = "deposit", "credit_card"
NOT_FOR_RETAIL = {"sme_overdraft", "sme_acquiring"}


@dataclass
class Drill:
    cluster: StoreCluster
    store: FeatureStore
    service: RecommendationService
    client_id: str

    @property
    def replicaset(self) -> Any:
        rs_id = self.store.replicaset_of_bucket(self.store.bucket_id_for(self.client_id)).id
        return self.cluster.topology[rs_id - 1]

    def names(self) -> list[str]:
        return [spec.name for spec in self.replicaset.instances]

    def stall(self, *names: str) -> None:
        for name in names:
            self.cluster.kill(name, signal.SIGSTOP)

    def resume_all(self) -> None:
        for spec in self.cluster.instances():
            self.cluster.kill(spec.name, signal.SIGCONT)

    async def answer(self, limit: int = 9) -> dict[str, Any]:
        started = time.perf_counter()
        answer = await self.service.recommend(self.client_id, limit=limit)
        assert time.perf_counter() - started < BUDGET_S + MARGIN_S, answer
        return answer


def client_events(client_id: str) -> list[tuple[str, str, dict[str, object]]]:
    """A retail client of 40 who holds a deposit and applied for a credit card last week."""
    now = time.time()
    return [
        ("clients", client_id, {"client_id": client_id, "ts": now - 86400 * 400, "segment": "retail",
                                "birth_date": "1986-02-01", "registered_at": "2019-05-01"}),
        ("products", client_id, {"client_id": client_id, "product": HELD, "action": "opened", "ts": now - 86400 * 90}),
        ("applications", client_id, {"application_id": f"{client_id}-a1", "client_id": client_id,
                                     "product": APPLIED, "status": "submitted", "ts": now - 86400 * 7}),
        *(
            ("transactions", client_id, {"tx_id": f"{client_id}-t{i}", "client_id": client_id, "ts": now - 86400 * i,
                                         "amount": 100.0 + i, "currency": "RUB", "direction": "out", "mcc": 5411})
            for i in range(1, 30)
        ),
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def drill_on_a_private_cluster(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, prefix: str
) -> AsyncIterator[Drill]:
    """A private cluster holding one client (``prefix`` + a random part) and a service reading it; every
    stalled instance is resumed at the end."""
    private = private_settings(settings, tmp_path_factory.mktemp(prefix), memtx_memory_mb=128)
    cluster = StoreCluster(private)
    await cluster.start()
    store = FeatureStore(private.store, topology=cluster.topology)
    await store.start()
    client_id = f"{prefix}{uuid.uuid4().hex[:6]}"
    await load_events(store, client_events(client_id))
    await cluster.wait_synced()
    models = tmp_path_factory.mktemp("models")
    catalogue = CatalogueFile(ROOT / "deploy" / "products.toml")
    space = FeatureSpace.from_view(private.views["client_profile"])
    service = RecommendationService(ServingStore(store), ModelRegistry(models, space, catalogue()), catalogue, space)
    try:
        yield Drill(cluster, store, service, client_id)
    finally:
        for spec in cluster.instances():
            cluster.kill(spec.name, signal.SIGCONT)
        await store.stop()
        cluster.stop()


def drill_fixtures(prefix: str) -> tuple[Any, Any]:
    """A drill module's fixtures: ``drill``, one private cluster for the module (its client's id starts with
    ``prefix``), and ``faults``, the drill for one test with every stalled instance resumed after it."""

    @pytest.fixture(scope="module")
    async def drill(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Drill]:
        async with drill_on_a_private_cluster(settings, tmp_path_factory, prefix) as made:
            yield made

    @pytest.fixture
    def faults(drill: Drill) -> Iterator[Drill]:
        try:
            yield drill
        finally:
            drill.resume_all()

    return drill, faults


drill, faults = drill_fixtures("nf")  # every test leaves the cluster running and the cache empty


def offered(answer: dict[str, Any]) -> set[str]:
    return {item["product"] for item in answer["items"]}


async def test_healthy_store_baseline(faults: Drill) -> None:
    answer = await faults.answer()
    assert answer["facts_source"] in {"master", "cache"} and not answer["degraded"]
    assert offered(answer) and not offered(answer) & {HELD, APPLIED, *NOT_FOR_RETAIL}


@pytest.mark.parametrize("fast_path", [False, True], ids=["full", "fast path"])
async def test_a_stalled_master_is_replaced_by_a_fresh_replica_within_the_budget(
    faults: Drill, fast_path: bool
) -> None:
    await faults.service.serving.cache_invalidate(faults.client_id)
    master, *_ = faults.names()
    faults.stall(master)
    if fast_path:
        faults.service.max_in_flight = -1  # every request takes the status-only fast path
    try:
        answer = await faults.answer()
    finally:
        faults.service.max_in_flight = 64
    assert answer["facts_source"].startswith("replica ") and answer["facts_source"] != f"replica {master}"
    assert offered(answer), answer
    assert not offered(answer) & {HELD, APPLIED, *NOT_FOR_RETAIL}
    faults.resume_all()
    await background_done(faults.service)  # a cache put, if one were made, has landed
    after = await faults.answer()
    assert not after["cached"] and after["facts_source"] == "master"  # a replica's answer is never cached


async def test_a_catalogue_change_makes_cached_answers_stale(faults: Drill) -> None:
    await faults.service.serving.cache_invalidate(faults.client_id)
    await faults.answer()
    await background_done(faults.service)
    cached = await faults.answer()
    assert cached["cached"] and cached["facts_source"] == "cache"
    top = cached["items"][0]["product"]
    catalogue = faults.service.catalogue()
    catalogue.rules.append(Rule(name="stop-selling", product=top, action="suppress", everyone=True))
    try:
        after = await faults.answer()
    finally:
        catalogue.rules.pop()
    assert not after["cached"] and top not in offered(after)


async def test_a_whole_stalled_replica_set_gives_an_empty_degraded_answer(faults: Drill) -> None:
    faults.stall(*faults.names())
    answer = await faults.answer()
    assert answer["items"] == [] and answer["degraded"] and "feature_store" in answer["missing_scorers"]
    assert "could not be read" in answer["degraded_reason"] and answer["facts_source"] is None


async def test_a_replica_lagging_behind_an_application_is_not_trusted(faults: Drill, settings: Settings) -> None:
    master, lagging, fresh = faults.names()
    await faults.service.serving.cache_invalidate(faults.client_id)
    newly = "insurance"
    assert newly in offered(await faults.answer())  # so the test can fail: it is offered before
    rs = faults.replicaset
    lagging_spec = next(spec for spec in rs.instances if spec.name == lagging)
    fresh_spec = next(spec for spec in rs.instances if spec.name == fresh)
    await faults.cluster.call_instance(lagging_spec, "set_replication", [[]], timeout=10)  # it falls behind
    try:
        application = {"application_id": f"{faults.client_id}-a2", "client_id": faults.client_id,
                       "product": newly, "status": "submitted", "ts": time.time()}  # fmt: skip
        await load_events(faults.store, [("applications", faults.client_id, application)])
        await faults.cluster.wait_synced(only=fresh_spec)  # the fresh replica receives it

        faults.stall(master, fresh)  # only the lagging copy answers: it cannot show it is fresh
        alone = await faults.answer()
        assert alone["items"] == [] and alone["degraded"]

        faults.cluster.kill(fresh, signal.SIGCONT)  # now a fresh sibling answers too, and wins
        answer = await faults.answer()
        assert answer["facts_source"] == f"replica {fresh}"
        assert offered(answer) and not offered(answer) & {HELD, APPLIED, newly, *NOT_FOR_RETAIL}
    finally:
        faults.resume_all()
        peers = [faults.cluster.peer_uri(spec) for spec in rs.instances]
        await faults.cluster.call_instance(lagging_spec, "set_replication", [peers], timeout=30)
        await faults.cluster.wait_synced()


async def test_a_cache_put_computed_before_a_status_change_is_refused(faults: Drill) -> None:
    serving, client = faults.service.serving, faults.client_id
    specs = faults.service._specs(faults.service.catalogue())
    read = await serving.read_client(client, specs, time.time(), timeout=1.0)
    application = {"application_id": f"{client}-a3", "client_id": client, "product": "investments",
                   "status": "submitted", "ts": time.time()}  # fmt: skip
    await load_events(faults.store, [("applications", client, application)])
    assert await serving.cache_put(client, {"items": []}, 60, read) is False  # the status changed since the read
    assert await serving.cache_get(client, timeout=1.0) is None
    fresh = await serving.read_client(client, specs, time.time(), timeout=1.0)
    assert fresh.status_gen != read.status_gen
    assert await serving.cache_put(client, {"items": []}, 60, fresh) is True
    stale = type(fresh)(fresh.values, fresh.status_gen, fresh.read_at - 10, fresh.source)
    assert await serving.cache_put(client, {"items": []}, 60, stale) is False  # too old a read
    await serving.cache_invalidate(client)


async def test_the_store_entirely_stalled_or_stopped_gives_an_empty_degraded_answer(faults: Drill) -> None:
    faults.stall(*(spec.name for spec in faults.cluster.instances()))
    stalled = await faults.answer()
    assert stalled["items"] == [] and stalled["degraded"] and stalled["facts_source"] is None
    faults.resume_all()
    faults.cluster.stop()  # connections refused rather than unanswered
    try:
        stopped = await faults.answer()
        assert stopped["items"] == [] and stopped["degraded"] and stopped["facts_source"] is None
    finally:
        await faults.cluster.start()
    assert offered(await faults.answer())  # and it comes back by itself
