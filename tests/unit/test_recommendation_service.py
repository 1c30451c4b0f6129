"""The recommendation service (``manager.recommend``) against an in-memory serving store, no Tarantool: an answer
never offers a held, applied-for or ineligible product; a slow or broken scorer is left out, named and the
answer kept within the budget and not cached; the overload fast path ranks by popularity and still filters;
a store that cannot give the client's facts yields an empty, degraded answer (fail closed); cached answers are
served only under the model versions and catalogue they were made with; answers read from a replica are
never cached."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from feature_store.errors import StoreTimeout, StoreUnavailable
from feature_store.records import Value
from feature_store.serving import ClientRead, NoTrustedCopy, ServingStore
from feature_store.specs import AggregateSpec
from manager.recommend import FACTS_UNAVAILABLE, OVERLOADED, SHED_ABOVE, RecommendationService
from recommenders.catalogue import Catalogue, Rule
from recommenders.expert import ExpertScorer
from recommenders.profile import HISTORY_FACTS, PROFILE_FACTS, ClientSnapshot, FeatureSpace, all_specs, status_specs
from recommenders.registry import ModelRegistry
from recommenders.scorer import ProductScore

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0
CLIENT = "c-retail-1"
# The client below: a retail adult (35 years, 400 days with the bank) who holds a deposit and applied for a
# credit card. The catalogue's SME products are not served to retail clients.
HELD, APPLIED, INELIGIBLE = {"deposit"}, {"credit_card"}, {"sme_overdraft", "sme_acquiring"}
FORBIDDEN = HELD | APPLIED | INELIGIBLE
ALLOWED = {"savings_account", "premium_debit_card", "consumer_loan", "mortgage", "investments", "insurance"}
# Generous: this is a unit test on a busy machine, not a latency benchmark.
MARGIN_S = 0.2


def client_facts(now: float) -> dict[str, Value]:
    """Store values by spec label; every label not named here reads as None (nothing on record)."""
    return {
        "last(profile.segment)": "retail",
        "last(profile.birth_date)": now - 35 * 365.25 * DAY,
        "last(profile.registered_at)": now - 400 * DAY,
        "last(product.deposit.opened)": now - 100 * DAY,
        "count(app.credit_card.submitted,180d)": 1,
        "sum(tx.out.amount,30d)": 0,
        "avg(balance,90d)": 0,
    }


class FakeServingStore:
    """The part of ``ServingStore`` the service uses, in memory. ``read_client`` answers the values of the
    specs it is given, in their order; ``cache_put`` refuses answers read from a replica as the real one does."""

    def __init__(self, *, source: str = "master", fail: BaseException | None = None) -> None:
        self.hedge_after_s = 0.05
        self.facts = client_facts(time.time())
        self.source = source
        self.fail = fail
        self.cache_fail: BaseException | None = None
        self.reads: list[list[AggregateSpec]] = []
        self.puts: list[tuple[str, dict[str, Any], float, ClientRead]] = []
        self.cache: dict[str, Any] = {}

    async def read_client(
        self, subject: str, specs: Sequence[AggregateSpec], now: float, *, timeout: float, with_cache: bool = False
    ) -> ClientRead:
        """``reads`` lists the facts reads; a cache hit (the master's cached answer, one call) computes none.
        With ``cache_fail`` set the cache part is broken: the call answers the facts."""
        assert timeout > 0
        if self.fail is not None:
            raise self.fail
        if with_cache and self.cache_fail is None and self.source == "master" and subject in self.cache:
            return ClientRead([], 42, now, self.source, self.cache[subject])
        self.reads.append(list(specs))
        return ClientRead([self.facts.get(s.label) for s in specs], 42, now, self.source)

    async def cache_get(self, subject: str, *, timeout: float) -> Any:
        if self.cache_fail is not None:
            raise self.cache_fail
        return self.cache.get(subject)

    async def cache_put(self, subject: str, payload: Any, ttl_s: float, read: ClientRead) -> bool:
        self.puts.append((subject, payload, ttl_s, read))
        if read.source != "master":
            return False
        self.cache[subject] = payload
        return True

    async def cache_invalidate(self, subject: str) -> None:
        self.cache.pop(subject, None)


@dataclasses.dataclass
class FakeScorer:
    """A scorer that answers 0.5 for every product it is asked about, after ``delay_s``, or raises ``error``."""

    name: str
    version: str = "t1"
    delay_s: float = 0.0
    error: Exception | None = None
    asked: list[list[str]] = dataclasses.field(default_factory=list)

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        self.asked.append(list(products))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return {p: ProductScore(p, 0.5) for p in products}


class Catalogues:
    """The catalogue callable the service reads on each request; tests swap ``current``."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.current = catalogue

    def __call__(self) -> Catalogue:
        return self.current


@pytest.fixture
def store() -> FakeServingStore:
    return FakeServingStore()


def make_service(
    store: FakeServingStore,
    catalogue: Catalogue,
    space: FeatureSpace,
    models_dir: Path,
    *scorers: FakeScorer,
    timeouts: dict[str, float] | None = None,
) -> RecommendationService:
    return RecommendationService(
        cast(ServingStore, store),
        ModelRegistry(models_dir, space, catalogue),  # an empty directory: untrained expert + uniform popularity
        Catalogues(catalogue),
        space,
        scorer_timeouts=timeouts,
        extra_scorers=scorers,
    )


async def settle(service: RecommendationService) -> None:
    """Wait for the background work (the cache put) the last answer started."""
    await asyncio.gather(*list(service._background))


def shown(answer: dict[str, Any]) -> set[str]:
    return {item["product"] for item in answer["items"]}


# ---- a full answer ------------------------------------------------------------------------------------------
async def test_an_answer_offers_only_allowed_products_and_is_cached_when_every_scorer_answered(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    spy = FakeScorer("xgboost")
    service = make_service(store, catalogue, space, tmp_path, spy)
    answer = await service.recommend(CLIENT, limit=len(catalogue.products))

    assert shown(answer) == ALLOWED and not shown(answer) & FORBIDDEN
    assert spy.asked and set(spy.asked[0]) == ALLOWED  # scorers are asked about allowed products only
    assert answer["degraded"] is False and answer["missing_scorers"] == [] and answer["degraded_reason"] is None
    assert answer["cached"] is False and answer["facts_source"] == "master"
    assert answer["model_versions"] == {"xgboost": "t1", "expert": "untrained"}
    assert answer["catalogue"] == catalogue.fingerprint()
    # the one store read asks for the view and the product status, less the history's versions of the profile
    # (as of now the newest profile is visible; the history serves training's past cuts)
    assert HISTORY_FACTS <= {s.label for s in space.view}
    expected = [s.label for s in all_specs(space, catalogue) if s.label not in HISTORY_FACTS]
    assert [s.label for s in store.reads[0]] == expected

    await settle(service)
    assert len(store.puts) == 1
    subject, payload, ttl_s, read = store.puts[0]
    assert subject == CLIENT and ttl_s == catalogue.decision.cache_ttl_s
    assert read.source == "master" and read.status_gen == 42  # the conditional put carries the read's generation
    assert shown(payload) == ALLOWED and payload["cached"] is False


async def test_the_limit_cuts_the_answer_and_defaults_to_the_catalogue(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    service = make_service(store, catalogue, space, tmp_path)
    assert len((await service.recommend(CLIENT))["items"]) == catalogue.decision.default_limit
    assert len((await service.recommend("c-other", limit=2))["items"]) == 2


# ---- missing scorers -----------------------------------------------------------------------------------------
async def test_a_slow_scorer_is_left_out_within_the_budget_and_the_answer_is_not_cached(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    """No timeout of its own: the scorer is cut at what is left of the budget."""
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("sleepy", delay_s=5.0))
    started = time.perf_counter()
    answer = await service.recommend(CLIENT, limit=3)
    elapsed = time.perf_counter() - started

    assert elapsed < catalogue.decision.budget_s + MARGIN_S
    assert answer["degraded"] is True and answer["missing_scorers"] == ["sleepy"]
    assert "sleepy" in answer["degraded_reason"]
    assert len(answer["items"]) == 3 and not shown(answer) & FORBIDDEN
    assert all(item["sources"] == ["expert"] for item in answer["items"])  # the scorers that answered still count
    await settle(service)
    assert store.puts == [] and store.cache == {}


async def test_a_scorer_timeout_cuts_a_slow_scorer_before_the_budget(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    service = make_service(
        store, catalogue, space, tmp_path, FakeScorer("sleepy", delay_s=5.0), timeouts={"sleepy": 0.02}
    )
    started = time.perf_counter()
    answer = await service.recommend(CLIENT)
    assert time.perf_counter() - started < catalogue.decision.budget_s - 0.1
    assert answer["degraded"] is True and answer["missing_scorers"] == ["sleepy"]


async def test_a_raising_scorer_is_named_and_the_others_still_answer(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    broken = FakeScorer("broken", error=RuntimeError("model file corrupt"))
    service = make_service(store, catalogue, space, tmp_path, broken, FakeScorer("xgboost"))
    answer = await service.recommend(CLIENT, limit=9)

    assert answer["degraded"] is True and answer["missing_scorers"] == ["broken"]
    assert "broken" in answer["degraded_reason"]
    assert shown(answer) == ALLOWED
    assert all(item["sources"] == ["xgboost", "expert"] for item in answer["items"])
    await settle(service)
    assert store.puts == []


# ---- the fast path -------------------------------------------------------------------------------------------
async def test_under_overload_the_fast_path_ranks_by_popularity_and_still_filters(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    spy = FakeScorer("xgboost")
    service = make_service(store, catalogue, space, tmp_path, spy)
    service.max_in_flight = -1  # every request counts as overload
    popularity = {p: 0.01 * (i + 1) for i, p in enumerate(catalogue.ids)}  # distinct, so the order is telling
    service.registry.current.popularity = popularity
    answer = await service.recommend(CLIENT, limit=len(catalogue.products))

    value = {p.id: p.value for p in catalogue.products}
    assert [item["product"] for item in answer["items"]] == sorted(ALLOWED, key=lambda p: -popularity[p] * value[p])
    assert all(item["sources"] == ["popularity"] for item in answer["items"])
    assert answer["degraded"] is True and answer["degraded_reason"].startswith("fast path (load)")
    assert set(answer["missing_scorers"]) == {"xgboost", "expert"}
    assert spy.asked == []  # no model is run
    # the one store read asks for the product status and the eligibility facts, not the model inputs
    labels = {s.label for s in store.reads[0]}
    assert labels == PROFILE_FACTS | {s.label for s in status_specs(catalogue)}
    await settle(service)
    assert store.puts == []


async def test_base_rates_are_the_clients_segments_and_learned_weights_are_served(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    """The model's base rates per segment rank the fast path; on the full path the learned weights decide: all
    weight on the base rate ranks like the segment's rates, whatever the (flat 0.5) scorer says."""
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    models = service.registry.current
    retail = {p: 0.01 * (len(catalogue.ids) - i) for i, p in enumerate(catalogue.ids)}  # the catalogue order
    models.segment_popularity = {"retail": retail, "sme": {p: 0.5 for p in catalogue.ids}}
    models.popularity = {p: 0.01 * (i + 1) for i, p in enumerate(catalogue.ids)}  # the reverse: must not be used
    value = {p.id: p.value for p in catalogue.products}
    expected = sorted(ALLOWED, key=lambda p: -retail[p] * value[p])

    service.max_in_flight = -1  # the fast path
    fast = await service.recommend(CLIENT, limit=len(catalogue.products))
    assert [item["product"] for item in fast["items"]] == expected

    service.max_in_flight = 128
    models.blend_weights = {"xgboost": 0.0, "als": 0.0, "expert": 0.0, "base_rate": 1.0}
    full = await service.recommend(CLIENT, limit=len(catalogue.products))
    assert not full["degraded"] and [item["product"] for item in full["items"]] == expected
    catalogue.decision.learned_weights = False  # the catalogue's weights again: the flat scorer ties everything
    store.cache.clear()
    await settle(service)
    store.cache.clear()
    plain = await service.recommend(CLIENT, limit=len(catalogue.products))
    assert [item["product"] for item in plain["items"]] != expected


async def test_beyond_the_shedding_limit_nothing_is_read_and_nothing_offered(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    spy = FakeScorer("xgboost")
    service = make_service(store, catalogue, space, tmp_path, spy)
    service.shed_above = -1  # every request is beyond what the process can serve in time
    answer = await service.recommend(CLIENT, limit=9)

    assert answer["items"] == [] and answer["degraded"] is True and answer["degraded_reason"] == OVERLOADED
    assert set(answer["missing_scorers"]) == {"feature_store", "xgboost", "expert"}
    assert store.reads == [] and spy.asked == []  # neither the store nor a model is asked
    await settle(service)
    assert store.puts == []  # and nothing is cached

    service.shed_above = SHED_ABOVE  # back under the limit: full answers again
    assert shown(await service.recommend(CLIENT, limit=9)) == ALLOWED


async def test_a_request_that_arrives_with_too_little_budget_left_takes_the_fast_path(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("sleepy", delay_s=5.0))
    budget = catalogue.decision.budget_s
    started = time.perf_counter() - (budget - 0.1)  # queued in the process for most of its budget
    answer = await service.recommend(CLIENT, limit=9, started=started)

    assert time.perf_counter() - started < budget + MARGIN_S
    assert answer["degraded"] is True and answer["degraded_reason"].startswith("fast path (budget)")
    assert answer["items"] and shown(answer) <= ALLOWED


# ---- fail closed ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "failure",
    [NoTrustedCopy("no copy answered with fresh facts"), StoreTimeout("deadline passed"), TimeoutError()],
    ids=["no-trusted-copy", "store-timeout", "timeout"],
)
async def test_when_no_copy_of_the_store_gives_the_facts_nothing_is_offered(
    failure: BaseException, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    store = FakeServingStore(fail=failure)
    spy = FakeScorer("xgboost")
    service = make_service(store, catalogue, space, tmp_path, spy)
    answer = await service.recommend(CLIENT, limit=3)

    assert answer["items"] == []
    assert answer["degraded"] is True and answer["degraded_reason"] == FACTS_UNAVAILABLE
    assert answer["missing_scorers"] == ["feature_store"]
    assert answer["facts_source"] is None and answer["cached"] is False
    assert spy.asked == []
    await settle(service)
    assert store.puts == []


# ---- the cache -----------------------------------------------------------------------------------------------
async def test_a_cached_answer_is_served_without_reading_the_store(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    first = await service.recommend(CLIENT, limit=3)
    await settle(service)
    second = await service.recommend(CLIENT, limit=2)

    assert second["cached"] is True and second["facts_source"] == "cache"
    assert second["items"] == first["items"][:2]
    assert second["model_versions"] == first["model_versions"] and second["degraded"] is False
    assert len(store.reads) == 1  # the hit did not read the client's facts
    assert len(store.puts) == 1


async def test_a_cached_answer_of_other_model_versions_is_recomputed(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    service = make_service(store, catalogue, space, tmp_path)
    await service.recommend(CLIENT)
    await settle(service)
    # a hot reload serves a new model version
    service.registry.current = dataclasses.replace(
        service.registry.current, version="v2", expert=ExpertScorer("v2", space, catalogue)
    )
    answer = await service.recommend(CLIENT)

    assert answer["cached"] is False and answer["facts_source"] == "master"
    assert answer["model_versions"] == {"expert": "v2"}
    assert len(store.reads) == 2
    await settle(service)
    assert store.cache[CLIENT]["model_versions"] == {"expert": "v2"}


async def test_a_cached_answer_of_another_catalogue_is_recomputed(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    service = make_service(store, catalogue, space, tmp_path)
    await service.recommend(CLIENT, limit=9)
    await settle(service)
    assert "mortgage" in shown(store.cache[CLIENT])
    # a manual rule added to the catalogue must take effect before the cached answer expires
    rule = Rule(name="no-mortgages", product="mortgage", action="suppress", everyone=True)
    changed = catalogue.model_copy(update={"rules": [*catalogue.rules, rule]})
    cast(Catalogues, service.catalogue).current = changed
    answer = await service.recommend(CLIENT, limit=9)

    assert answer["cached"] is False and answer["catalogue"] == changed.fingerprint() != catalogue.fingerprint()
    assert shown(answer) == ALLOWED - {"mortgage"}
    assert len(store.reads) == 2


async def test_a_cache_that_fails_is_a_miss(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    store.cache_fail = StoreUnavailable("master down")
    service = make_service(store, catalogue, space, tmp_path)
    answer = await service.recommend(CLIENT, limit=9)
    assert answer["cached"] is False and answer["degraded"] is False and shown(answer) == ALLOWED


async def test_an_answer_read_from_a_replica_is_not_cached(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    """The service offers every full answer to ``cache_put``; the store refuses one read from a replica (see the
    next test), so the next request reads again."""
    store = FakeServingStore(source="replica s1-b")
    service = make_service(store, catalogue, space, tmp_path)
    answer = await service.recommend(CLIENT, limit=9)
    assert answer["facts_source"] == "replica s1-b" and answer["degraded"] is False
    assert shown(answer) == ALLOWED
    await settle(service)
    assert [read.source for *_, read in store.puts] == ["replica s1-b"] and store.cache == {}

    again = await service.recommend(CLIENT, limit=9)
    assert again["cached"] is False and len(store.reads) == 2


class RecordingFeatureStore:
    """Stands in for ``FeatureStore`` below ``ServingStore``: records routed calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[Any], bool]] = []

    async def call_routed(
        self, subject: str, fn: str, args: list[Any], *, write: bool = False, timeout: float | None = None
    ) -> Any:
        self.calls.append((subject, fn, args, write))
        return True


async def test_the_serving_store_refuses_to_cache_an_answer_read_from_a_replica() -> None:
    """The contract ``FakeServingStore.cache_put`` imitates, on the real ``ServingStore``."""
    backend = RecordingFeatureStore()
    serving = ServingStore(backend)  # type: ignore[arg-type]
    read_at = time.time()
    assert await serving.cache_put(CLIENT, {"items": []}, 300, ClientRead([], 5, read_at, "replica s1-b")) is False
    assert backend.calls == []

    assert await serving.cache_put(CLIENT, {"items": []}, 300, ClientRead([], 5, read_at, "master")) is True
    [(subject, fn, args, write)] = backend.calls
    assert (subject, fn, write) == (CLIENT, "cache_put", True)
    assert args[2:] == [{"items": []}, 5, read_at]  # the conditional put: payload, status generation, read time


@pytest.mark.parametrize(("lag_s", "expected"), [(0.07, "fast path"), (0.2, "shed")])
async def test_a_late_event_loop_counts_against_the_budget_and_sheds(
    store: FakeServingStore, catalogue: Catalogue, space: FeatureSpace, tmp_path: Path, lag_s: float, expected: str
) -> None:
    """Requests waited about as long as the loop runs late before the service saw them: a late loop takes
    the fast path, a very late one sheds."""
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    service.loop_lag = lambda: lag_s
    answer = await service.recommend(CLIENT, limit=9)
    assert answer["degraded"] is True and answer["elapsed_ms"] >= lag_s * 1000
    if expected == "fast path":
        assert answer["degraded_reason"].startswith("fast path (load)") and shown(answer) <= ALLOWED
    else:
        assert answer["degraded_reason"] == OVERLOADED and answer["items"] == [] and store.reads == []
