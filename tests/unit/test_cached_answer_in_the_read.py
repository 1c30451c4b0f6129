"""Attacks on the cached answer inside the hedged client read (``client_read(..., with_cache)``), with fakes:

- ``ServingStore.read_client``: the cache rides only on the master call; a slow master holding a cached answer
  is still hedged to a fresh replica within the deadline, replicas are never asked with the cache, a master
  answer that turns out read-only is never taken for a cached answer (nor for facts);
- ``RecommendationService``: a cache hit (``values == []``) is never used as facts (no snapshot, no cache put);
  a cached answer made by other models / under another catalogue is not served and the facts are read again
  within the budget; the fast path still filters; a stale hit that ate the budget leads to the fast path;
- metrics with several API workers (prometheus multiprocess files): counters are summed over the workers,
  store-watch gauges show the latest value without a pid label.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, cast

import pytest

from feature_store.serving import BUSY_MASTER_SILENCE_S, ClientRead, NoTrustedCopy, ServingStore
from feature_store.specs import AggregateSpec
from recommenders.catalogue import Catalogue
from recommenders.profile import FeatureSpace, all_specs
from tests.unit.test_recommendation_service import (
    ALLOWED,
    CLIENT,
    FORBIDDEN,
    MARGIN_S,
    FakeScorer,
    FakeServingStore,
    make_service,
    settle,
    shown,
)

ROOT = Path(__file__).resolve().parents[2]


# ================================================================================================================
# ServingStore.read_client against a fake FeatureStore (a master and two replicas)
# ================================================================================================================
GOOD_REPLICATION = {"configured": 2, "following": 2, "stopped": 0, "max_lag": 0.0}
CACHED = {"client_id": CLIENT, "items": [{"product": "deposit"}], "model_versions": {}, "catalogue": "x"}


@dataclasses.dataclass
class Spec:
    name: str


class FakeInstance:
    def __init__(self, name: str, answer: dict[str, Any], delay_s: float = 0.0) -> None:
        self.spec = Spec(name)
        self.answer = answer
        self.delay_s = delay_s
        self.calls: list[tuple[str, list[Any]]] = []

    async def call(self, fn: str, args: list[Any], *, timeout: float | None = None) -> Any:
        self.calls.append((fn, list(args)))
        await asyncio.sleep(self.delay_s)
        return dict(self.answer)


class FakeReplicaSet:
    def __init__(self, instances: list[FakeInstance], master_name: str) -> None:
        self.id = 1
        self.instances = instances
        self.master_name = master_name
        self.forgotten = 0
        self.suspected = 0

    def forget_master(self) -> None:
        self.forgotten += 1

    def suspect_master(self) -> None:
        self.suspected += 1


class FakeFeatureStore:
    """``call_routed(write=True)`` goes to the instance taken for the master, as the real client does."""

    def __init__(self, rs: FakeReplicaSet) -> None:
        self.rs = rs
        self.routed: list[tuple[str, list[Any], bool]] = []
        self.map_refreshes = 0

    async def refresh_bucket_map(self) -> dict[int, int]:
        self.map_refreshes += 1
        return {7: 1}

    def bucket_id_for(self, subject: str) -> int:
        return 7

    def replicaset_of_bucket(self, bucket: int) -> FakeReplicaSet:
        return self.rs

    async def call_routed(
        self, subject: str, fn: str, args: list[Any], *, write: bool, timeout: float | None = None
    ) -> Any:
        self.routed.append((fn, list(args), write))
        master = next(i for i in self.rs.instances if i.spec.name == self.rs.master_name)
        return await master.call(fn, [7, *args], timeout=timeout)


def replica_answer(values: list[Any], gen: int = 3) -> dict[str, Any]:
    return {
        "values": values,
        "status_gen": gen,
        "read_at": time.time(),
        "ro": True,
        "vclock": {"1": 10, "2": 0},
        "replication": GOOD_REPLICATION,
    }


def cluster(master_delay_s: float, *, master_ro: bool = False) -> tuple[ServingStore, FakeReplicaSet]:
    hit = {"cached": CACHED, "values": [], "status_gen": 3, "read_at": time.time(), "ro": master_ro}
    master = FakeInstance("m", hit, delay_s=master_delay_s)
    replicas = [FakeInstance("r1", replica_answer(["facts"])), FakeInstance("r2", replica_answer(["facts"]))]
    rs = FakeReplicaSet([master, *replicas], "m")
    return ServingStore(cast(Any, FakeFeatureStore(rs)), hedge_after_s=0.05), rs


SPECS: list[AggregateSpec] = []


async def test_a_fast_master_cache_hit_is_one_call_and_carries_no_facts() -> None:
    serving, rs = cluster(0.0)
    read = await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.4, with_cache=True)
    assert read.cached == CACHED and read.values == [] and read.source == "master"
    assert [fn for fn, _ in rs.instances[0].calls] == ["client_read"]
    assert rs.instances[0].calls[0][1][-1] is True  # with_cache rides on the master call
    assert not rs.instances[1].calls and not rs.instances[2].calls  # no hedge needed


async def test_a_slow_master_holding_a_cached_answer_is_still_hedged_within_the_deadline() -> None:
    serving, rs = cluster(5.0)
    started = time.monotonic()
    read = await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.4, with_cache=True)
    elapsed = time.monotonic() - started
    assert elapsed < 0.05 + 0.15, elapsed  # the hedge fired at hedge_after_s, not at the deadline
    assert read.source.startswith("replica") and read.cached is None and read.values == ["facts"]
    for replica in rs.instances[1:]:
        ((fn, args),) = replica.calls
        # replicas are asked with freshness and never with the cache: [bucket, subject, now, wire, True]
        assert fn == "client_read" and len(args) == 5 and args[-1] is True


async def test_a_loaded_master_that_keeps_answering_is_waited_for_and_a_silent_one_is_hedged() -> None:
    """Under overload the master answers slowly but answers: asking the replicas too would triple the store's
    work, so a read waits for a master that answered within BUSY_MASTER_SILENCE_S; a silent one is hedged."""
    serving, rs = cluster(0.0)
    await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.4)  # the master answered just now
    rs.instances[0].delay_s = 0.12  # slower than hedge_after_s, well within the budget
    read = await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.4)
    assert read.source == "master" and all(not replica.calls for replica in rs.instances[1:])

    await asyncio.sleep(BUSY_MASTER_SILENCE_S)  # silent since: stalled as far as anyone can tell
    rs.instances[0].delay_s = 5.0
    started = time.monotonic()
    read = await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.4)
    assert read.source.startswith("replica") and time.monotonic() - started < 0.05 + 0.15


async def test_a_read_only_master_answer_is_never_taken_for_a_cached_answer() -> None:
    """A demoted master (ro) answering with a cached answer (the Lua guards it, this is the Python's own
    guard): the answer is dropped and every copy is judged by freshness, without the cache."""
    serving, rs = cluster(0.0, master_ro=True)
    read = await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.4, with_cache=True)
    assert read.cached is None and read.values == ["facts"] and rs.forgotten >= 1


async def test_a_stalled_master_and_no_trusted_replica_fail_closed_at_the_deadline() -> None:
    serving, rs = cluster(5.0)
    for replica in rs.instances[1:]:
        replica.answer = {**replica.answer, "replication": {**GOOD_REPLICATION, "stopped": 1}}
    started = time.monotonic()
    with pytest.raises(NoTrustedCopy):
        await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.3, with_cache=True)
    assert time.monotonic() - started < 0.3 + 0.1


async def test_cache_put_refuses_a_read_that_was_a_cache_hit() -> None:
    """A hit carries the current gen and a fresh read_at, so the store would accept a put made with it: the
    put of an answer computed from its empty values ("holds nothing") would be cached and served. Only the
    caller's discipline prevents it today; the store object should refuse it itself."""
    serving, rs = cluster(0.0)
    hit = await serving.read_client(CLIENT, SPECS, time.time(), timeout=0.4, with_cache=True)
    rs.instances[0].answer = {"stored": True}
    stored = await serving.cache_put(CLIENT, {"items": []}, 60.0, hit)
    assert stored is False and not any(fn == "cache_put" for fn, _, _ in serving.store.routed)  # type: ignore[attr-defined]


# ================================================================================================================
# RecommendationService: the hit, the stale hit, the fast path
# ================================================================================================================
class ScriptedStore(FakeServingStore):
    """``script``: one entry per read_client call, (delay_s, cached-or-None); then plain facts reads."""

    def __init__(self, script: list[tuple[float, Any]]) -> None:
        super().__init__()
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    async def read_client(
        self, subject: str, specs: Any, now: float, *, timeout: float, with_cache: bool = False
    ) -> ClientRead:
        self.calls.append({"with_cache": with_cache, "labels": [s.label for s in specs], "timeout": timeout})
        delay, cached = self.script.pop(0) if self.script else (0.0, None)
        await asyncio.sleep(delay)
        if with_cache and cached is not None:
            return ClientRead([], 99, now, "master", cached)
        self.reads.append(list(specs))
        return ClientRead([self.facts.get(s.label) for s in specs], 42, now, self.source)


def answer_made_by(service: Any, cat: Catalogue, **changes: Any) -> dict[str, Any]:
    """A cached answer offering the forbidden products, as another model version would have made it."""
    versions = {s.name: s.version for s in service.scorers()}
    return {
        "client_id": CLIENT,
        "items": [{"product": p, "score": 1.0, "sources": ["x"]} for p in sorted(FORBIDDEN)],
        "degraded": False,
        "degraded_reason": None,
        "missing_scorers": [],
        "model_versions": versions,
        "cached": False,
        "facts_source": "master",
        "catalogue": cat.fingerprint(),
        **changes,
    }


async def test_a_valid_hit_is_served_without_facts_and_never_put_again(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    store = ScriptedStore([])
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    store.script = [(0.0, answer_made_by(service, catalogue))]
    answer = await service.recommend(CLIENT, limit=2)
    await settle(service)
    assert answer["cached"] is True and answer["facts_source"] == "cache" and len(answer["items"]) == 2
    assert store.reads == [] and store.puts == []  # a hit is no facts read and is not put back


@pytest.mark.parametrize("stale", [{"model_versions": {"xgboost": "t0", "expert": "untrained"}}, {"catalogue": "old"}])
async def test_a_stale_hit_is_not_served_and_its_empty_values_are_never_used_as_facts(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path, stale: dict[str, Any]
) -> None:
    store = ScriptedStore([])
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    store.script = [(0.0, answer_made_by(service, catalogue, **stale))]
    answer = await service.recommend(CLIENT, limit=len(catalogue.products))
    await settle(service)
    assert answer["cached"] is False and shown(answer) == ALLOWED and not shown(answer) & FORBIDDEN
    assert [c["with_cache"] for c in store.calls] == [True, False]  # the facts are read again, without the cache
    ((_, payload, _, read),) = store.puts
    # the put carries the re-read (its facts, its gen), never the hit's empty values or its gen
    assert read.cached is None and read.values and read.status_gen == 42
    assert not shown(payload) & FORBIDDEN


async def test_a_stale_hit_from_a_slow_master_keeps_the_budget(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    store = ScriptedStore([])
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    stale = answer_made_by(service, catalogue, catalogue="old")
    store.script = [(0.3, stale), (0.3, None)]  # the re-read is slow too
    started = time.perf_counter()
    answer = await service.recommend(CLIENT, limit=9)
    elapsed = time.perf_counter() - started
    await settle(service)
    assert elapsed < catalogue.decision.budget_s + MARGIN_S, elapsed
    assert not shown(answer) & FORBIDDEN
    assert store.calls[1]["timeout"] < catalogue.decision.budget_s - 0.3  # the re-read gets only what is left


async def test_after_a_stale_hit_ate_the_budget_the_answer_takes_the_fast_path(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    """The fast-path decision (``FAST_PATH_BELOW_S``) is taken before the combined call. Before this change the
    cache check was capped at min(left/4, hedge_after_s), so the decision saw almost the whole budget; now a
    stale hit may arrive late and the re-read and the scorers still run the full path on the remains."""
    store = ScriptedStore([])
    spy = FakeScorer("xgboost")
    service = make_service(store, catalogue, space, tmp_path, spy)
    store.script = [(0.38, answer_made_by(service, catalogue, catalogue="old")), (0.0, None)]
    answer = await service.recommend(CLIENT, limit=9)
    assert not shown(answer) & FORBIDDEN
    full = [s.label for s in all_specs(space, catalogue)]
    assert store.calls[1]["labels"] != full, "the re-read with ~0.12 s left asked for the full feature view"
    assert spy.asked == [], "the scorers ran with less than FAST_PATH_BELOW_S left"


async def test_the_fast_path_with_the_cache_still_filters_and_serves_only_valid_hits(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    store = ScriptedStore([])
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    service.max_in_flight = -1  # every request is on the fast path
    store.script = [(0.0, answer_made_by(service, catalogue, catalogue="old"))]
    answer = await service.recommend(CLIENT, limit=len(catalogue.products))
    await settle(service)
    assert answer["cached"] is False and answer["degraded"] is True
    assert shown(answer) and not shown(answer) & FORBIDDEN
    assert [c["with_cache"] for c in store.calls] == [True, False] and store.puts == []
    miss = await service.recommend("c-miss", limit=len(catalogue.products))
    assert not shown(miss) & FORBIDDEN


async def test_a_replica_read_is_never_served_as_a_cached_answer_even_if_it_carried_one(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    """Defense in depth: the service serves ``read.cached`` whatever the read's source says."""
    store = ScriptedStore([])
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    valid = answer_made_by(service, catalogue)

    async def replica_with_cache(subject: str, specs: Any, now: float, *, timeout: float, with_cache: bool = False):
        if with_cache:
            return ClientRead([], 1, now, "replica r1", valid)
        return ClientRead([None] * len(specs), 1, now, "replica r1")  # facts unknown: nothing may be offered

    store.read_client = replica_with_cache  # type: ignore[method-assign]
    answer = await service.recommend(CLIENT, limit=9)
    # ServingStore never builds such a read today (replicas are asked without the cache); pinned as the
    # service's contract: nothing from a replica is served as cached
    assert answer["facts_source"] != "cache" and not answer["cached"]


# ================================================================================================================
# Metrics with several workers
# ================================================================================================================
WORKER = textwrap.dedent(
    """
    import sys, time
    from manager.metrics import FACTS_UNAVAILABLE_ANSWERS, STAGE_LATENCY
    from manager.store_watch import UP
    FACTS_UNAVAILABLE_ANSWERS.inc()
    STAGE_LATENCY.labels("read").observe(0.01)
    UP.labels("1", "s1-a").set(float(sys.argv[1]))
    """
)
SCRAPE = textwrap.dedent(
    """
    from prometheus_client import generate_latest
    from manager.metrics import metrics_registry
    print(generate_latest(metrics_registry()).decode())
    """
)


def test_metrics_sum_over_workers_and_store_gauges_show_the_latest_value(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for up in ("1", "0"):  # the second worker's round is the latest: the instance went down
        subprocess.run([sys.executable, "-c", WORKER, up], env=env, cwd=ROOT, check=True)
        time.sleep(0.05)
    out = subprocess.run([sys.executable, "-c", SCRAPE], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    facts = [line for line in lines if line.startswith("rtrec_facts_unavailable_answers_total")]
    assert facts and float(facts[0].split()[-1]) == 2.0, facts
    count = [line for line in lines if line.startswith('rtrec_recommendation_stage_seconds_count{stage="read"}')]
    assert count and float(count[0].split()[-1]) == 2.0, count
    up = [line for line in lines if line.startswith("rtrec_store_instance_up")]
    assert len(up) == 1 and "pid=" not in up[0] and float(up[0].split()[-1]) == 0.0, up


async def test_an_answer_served_from_the_cache_is_logged_like_any_other(
    catalogue: Catalogue, space: FeatureSpace, tmp_path: Path
) -> None:
    """Cache hits returned before the audit record: the log of answers shown missed every cached one."""

    class Recorded:
        def __init__(self) -> None:
            self.answers: list[dict[str, Any]] = []

        async def record(self, answer: dict[str, Any]) -> None:
            self.answers.append(answer)

    store = ScriptedStore([])
    service = make_service(store, catalogue, space, tmp_path, FakeScorer("xgboost"))
    service.audit = cast(Any, Recorded())
    store.script = [(0.0, None), (0.0, answer_made_by(service, catalogue))]
    fresh = await service.recommend(CLIENT, limit=2)
    cached = await service.recommend(CLIENT, limit=2)
    await settle(service)
    assert (fresh["cached"], cached["cached"]) == (False, True)
    logged = cast(Any, service.audit).answers
    assert [a["cached"] for a in logged] == [False, True] and all("ts" in a for a in logged)


async def test_a_client_whose_bucket_nobody_owns_starts_no_call() -> None:
    """With a replica set down when the API started, its buckets have no owner: the read raised after it had
    started the master call, which ran on by itself (retrying, refreshing the bucket map) for every request."""
    from feature_store.errors import NoOwner

    store, _ = cluster(0.0)
    fake = cast(FakeFeatureStore, store.store)

    def unowned(bucket: int) -> FakeReplicaSet:
        raise NoOwner(f"no replica set owns bucket {bucket}")

    fake.replicaset_of_bucket = unowned  # type: ignore[method-assign]
    for _ in range(20):
        with pytest.raises(NoOwner):
            await store.read_client("c1", SPECS, time.time(), timeout=0.5)
    await asyncio.sleep(0.01)
    assert fake.routed == []
    # and the bucket map is refreshed in the background, once (not per request): the replica set back, its
    # clients are served without a restart of the API
    assert fake.map_refreshes == 1
