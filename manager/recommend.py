"""One recommendation request under a deadline (default 0.5 s, from the catalogue's [decision] budget_s):

1. one store call: the master's cached answer when it has one (the cache is cleared there with every status
   change), else the client's facts: the feature view plus product status, from the master or, when the
   master is slow or down, from a replica that shows it is fresh (``feature_store.serving``);
3. every scorer concurrently, each with its own timeout inside what is left of the budget; whatever has not
   answered by then is left out and named (``degraded``, ``missing_scorers``);
4. the decision block (no held / applied-for / ineligible products, blend with fallbacks, rules, top-k);
5. the answer is cached (a conditional put: refused if the client's status changed since the read) and
   logged to Kafka in the background (never delaying it).

Under load, two steps down: above MAX_IN_FLIGHT requests in flight (or with little budget left) the fast path
reads only the product status and ranks by popularity; above SHED_ABOVE it reads nothing and offers nothing.

Fail closed: when no copy of the store gives the client's holdings, applications and eligibility facts in
time (or the request was shed), the answer is empty and ``degraded`` with a reason. A guess ("holds
nothing", "eligible for everything") is the one answer the product must never give.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from extractors.extract import ExtractionConfig
from feature_store.errors import StoreError
from feature_store.serving import ClientRead, ServingStore
from feature_store.specs import AggregateSpec
from manager.audit import AuditLog
from manager.metrics import (
    DEGRADED_ANSWERS,
    FACTS_UNAVAILABLE_ANSWERS,
    RECOMMENDATION_LATENCY,
    SCORER_FAILURES,
    SCORER_LATENCY,
    SHED_ANSWERS,
    STAGE_LATENCY,
)
from recommenders.catalogue import Catalogue
from recommenders.decision import Item, allowed_products, decide
from recommenders.profile import (
    HISTORY_FACTS,
    PROFILE_FACTS,
    ClientSnapshot,
    FeatureSpace,
    all_specs,
    snapshot_from,
    status_snapshot,
    status_specs,
)
from recommenders.registry import LoadedModels, ModelRegistry
from recommenders.scorer import ProductScore, Scorer

log = logging.getLogger(__name__)

# Time kept back from the scorers for the decision, serialisation and the response.
DECISION_RESERVE_S = 0.03
# Below this much budget left, or above this many requests in flight, answer on the fast path: product
# status only (the "no fails" filter still holds) ranked by popularity, no models. An overloaded process
# thus keeps answering within the budget instead of queueing every request past it.
FAST_PATH_BELOW_S = 0.15
MAX_IN_FLIGHT = 64
# Above this many requests in flight in one process even the fast path's store read would queue past the
# budget: the answer offers nothing, at once and without touching the store (as when no copy of the store can be
# read). Beyond what the machine can serve, this keeps every answer within the budget and correct, and sheds the
# work (store reads, models) that made the queue. `rtrec bench serve` at 2,000 requests/s shows it.
SHED_ABOVE = 2 * MAX_IN_FLIGHT
# The same two steps when the process's event loop runs late (``manager.loop_lag``): requests then wait before
# the service sees them, invisible to the count of requests in flight.
FAST_PATH_LAG_S = 0.05
SHED_LAG_S = 0.1
OVERLOADED = "overloaded: nothing is offered rather than an answer past the budget"
FACTS_UNAVAILABLE = (
    "the client's holdings, applications and eligibility facts could not be read from any copy of the store "
    "in time; nothing is offered rather than a guess"
)


class RecommendationService:
    def __init__(
        self,
        store: ServingStore,
        registry: ModelRegistry,
        catalogue: Callable[[], Catalogue],
        space: FeatureSpace,
        *,
        scorer_timeouts: dict[str, float] | None = None,
        extra_scorers: Sequence[Scorer] = (),
        audit: AuditLog | None = None,
        cache_enabled: bool = True,
        loop_lag: Callable[[], float] = lambda: 0.0,
        accepted_ahead_s: float = ExtractionConfig.max_ahead_s,
    ) -> None:
        self.serving = store
        self.registry = registry
        self.catalogue = catalogue
        self.space = space
        self.scorer_timeouts = scorer_timeouts or {}
        self.extra_scorers = list(extra_scorers)
        self.audit = audit
        self.cache_enabled = cache_enabled
        self._background: set[asyncio.Task[Any]] = set()
        self._specs_for: tuple[Catalogue, list[AggregateSpec]] | None = None
        self._status_for: tuple[Catalogue, list[AggregateSpec]] | None = None
        self.in_flight = 0
        self.max_in_flight = MAX_IN_FLIGHT
        self.shed_above = SHED_ABOVE
        self.loop_lag = loop_lag
        # The store accepts events up to this far ahead of its clock (a producer's clock running fast). The
        # client is read as of that much after now, so everything accepted counts at once: an application
        # stamped 30 s ahead blocks its product now, not in 30 s - after a cached answer had offered it again.
        self.accepted_ahead_s = accepted_ahead_s

    def scorers(self, models: LoadedModels | None = None) -> list[Scorer]:
        """The scorers of ``models`` (default: the version served now) plus remote ones."""
        models = models if models is not None else self.registry.current
        found: list[Scorer] = [s for s in (models.xgboost, models.als) if s is not None]
        return [*found, models.expert, *self.extra_scorers]

    async def recommend(
        self,
        client_id: str,
        limit: int | None = None,
        started: float | None = None,
    ) -> dict[str, Any]:
        """``started``: when the request reached the service (perf_counter), so queueing counts against the
        budget; defaults to now. The event loop's lag at that moment is counted too: the request waited about
        that long before."""
        self.in_flight += 1
        try:
            started = (started if started is not None else time.perf_counter()) - self.loop_lag()
            return await self._recommend(client_id, limit, started)
        finally:
            self.in_flight -= 1

    async def _recommend(self, client_id: str, limit: int | None, started: float) -> dict[str, Any]:
        catalogue = self.catalogue()
        budget = catalogue.decision.budget_s
        deadline = started + budget
        limit = limit or catalogue.decision.default_limit
        missing: list[str] = []
        reasons: list[str] = []
        # one model version for the whole request: a hot reload mid-request must not mix versions
        models = self.registry.current
        versions = self._served_versions(models)

        fingerprint = catalogue.fingerprint()
        mark = time.perf_counter()
        now = time.time()
        as_of = now + self.accepted_ahead_s
        shed = self._shed_reason(deadline)
        status_only = shed is not None
        overloaded = self.in_flight > self.shed_above or self.loop_lag() > SHED_LAG_S
        if overloaded:
            SHED_ANSWERS.labels("overload").inc()
            read = None
        else:
            read = await self._read(
                client_id, as_of, catalogue, deadline, status_only=status_only, cache=self.cache_enabled
            )
        if read is not None and read.cached is not None:
            if read.source == "master" and _still_valid(read.cached, versions, fingerprint):
                _stage("read", mark)
                elapsed = time.perf_counter() - started
                RECOMMENDATION_LATENCY.labels("true").observe(elapsed)
                return self._audited(
                    {
                        **read.cached,
                        "items": read.cached["items"][:limit],
                        "cached": True,
                        "facts_source": "cache",
                        "elapsed_ms": round(elapsed * 1e3, 3),
                    },
                    now,
                )
            # made by other models or under another catalogue: read the facts after all, deciding the path again
            # (a slow first call may have left too little budget for the models)
            shed = shed or self._shed_reason(deadline)
            status_only = shed is not None
            read = await self._read(client_id, as_of, catalogue, deadline, status_only=status_only, cache=False)
        mark = _stage("read", mark)
        results: dict[str, dict[str, ProductScore]] = {}
        ranked: list[Item] = []
        if read is None and overloaded:
            missing.extend(["feature_store", *(_label(s) for s in self.scorers(models))])
            reasons.append(OVERLOADED)
        elif read is None:
            FACTS_UNAVAILABLE_ANSWERS.inc()
            missing.append("feature_store")
            reasons.append(FACTS_UNAVAILABLE)
        else:
            snapshot = self._snapshot(client_id, as_of, catalogue, read, status_only=status_only)
            mark = _stage("snapshot", mark)
            if shed is not None:
                SHED_ANSWERS.labels(shed).inc()
                missing.extend(_label(s) for s in self.scorers(models))
                reasons.append(f"fast path ({shed}): ranked by popularity, no models")
            else:
                candidates = [p for p, why in allowed_products(snapshot, catalogue).items() if why is None]
                results = await self._fan_out(snapshot, candidates, deadline, missing, self.scorers(models))
                mark = _stage("scorers", mark)
                if missing:
                    reasons.append(f"scorers without an answer in time: {', '.join(missing)}")
            ranked = decide(
                snapshot,
                catalogue,
                results,
                models.base_rates(snapshot.segment),
                limit=len(catalogue.products),
                weights=models.blend_weights if catalogue.decision.learned_weights else None,
            )
            mark = _stage("decision", mark)
        answer: dict[str, Any] = {
            "client_id": client_id,
            "items": [item.as_dict() for item in ranked],
            "degraded": bool(missing),
            "degraded_reason": "; ".join(reasons) or None,
            "missing_scorers": missing,
            "model_versions": versions,
            "cached": False,
            "facts_source": read.source if read is not None else None,
            "catalogue": fingerprint,  # a cached answer is served only under the catalogue it was made with
        }
        if missing:
            DEGRADED_ANSWERS.inc()  # a partial answer is not cached: the next request tries again in full
        elif read is not None and self.cache_enabled:
            self._in_background(self.serving.cache_put(client_id, answer, catalogue.decision.cache_ttl_s, read))
        elapsed = time.perf_counter() - started
        RECOMMENDATION_LATENCY.labels("false").observe(elapsed)
        return self._audited({**answer, "items": answer["items"][:limit], "elapsed_ms": round(elapsed * 1e3, 3)}, now)

    def _audited(self, response: dict[str, Any], now: float) -> dict[str, Any]:
        """Log ``response`` to the audit topic (in the background) and return it: every answer shown, a cached
        one too, is in the log that feedback and compliance read."""
        if self.audit is not None:
            self._in_background(self.audit.record({**response, "ts": now}))
        return response

    def _served_versions(self, models: LoadedModels) -> dict[str, str]:
        return {s.name: s.version for s in self.scorers(models)}

    def _shed_reason(self, deadline: float) -> str | None:
        if deadline - time.perf_counter() < FAST_PATH_BELOW_S:
            return "budget"
        if self.in_flight > self.max_in_flight or self.loop_lag() > FAST_PATH_LAG_S:
            return "load"
        return None

    async def _read(
        self,
        client_id: str,
        now: float,
        catalogue: Catalogue,
        deadline: float,
        *,
        status_only: bool,
        cache: bool = False,
    ) -> ClientRead | None:
        """The client's facts from a copy that can be trusted, or None (then nothing may be offered); with
        ``cache``, the master's cached answer instead when it has one."""
        specs = self._status_specs(catalogue) if status_only else self._specs(catalogue)
        timeout = self._left(deadline) - DECISION_RESERVE_S
        timeout = max(timeout, 0.001)
        reading = self.serving.read_client(client_id, specs, now, timeout=timeout, with_cache=cache)
        try:  # bounded here too: the budget must not rest on the store client honouring its timeout
            return await asyncio.wait_for(reading, timeout)
        except (StoreError, TimeoutError) as exc:
            log.warning("facts of %s unavailable: %s", client_id, exc)
            return None

    async def facts(self, client_id: str, timeout: float = 2.0) -> ClientSnapshot | None:
        """The client as a full (non-cached) answer would see it now, or None when no copy can be trusted."""
        catalogue, now = self.catalogue(), time.time() + self.accepted_ahead_s
        read = await self._read(client_id, now, catalogue, time.perf_counter() + timeout, status_only=False)
        return None if read is None else self._snapshot(client_id, now, catalogue, read, status_only=False)

    def _snapshot(
        self, client_id: str, now: float, catalogue: Catalogue, read: ClientRead, *, status_only: bool
    ) -> ClientSnapshot:
        if status_only:
            return status_snapshot(client_id, now, catalogue, read.values, self._status_specs(catalogue))
        return snapshot_from(client_id, now, self.space, catalogue, read.values, self._specs(catalogue))

    async def _fan_out(
        self,
        snapshot: ClientSnapshot,
        candidates: list[str],
        deadline: float,
        missing: list[str],
        scorers: list[Scorer],
    ) -> dict[str, dict[str, ProductScore]]:
        if not candidates:
            return {}

        async def run(scorer: Scorer) -> tuple[str, dict[str, ProductScore]]:
            timeout = min(self.scorer_timeouts.get(scorer.name, 1e9), self._left(deadline) - DECISION_RESERVE_S)
            begun = time.perf_counter()
            try:
                return scorer.name, await asyncio.wait_for(scorer.score(snapshot, candidates), timeout=timeout)
            finally:
                SCORER_LATENCY.labels(scorer.name).observe(time.perf_counter() - begun)

        outcomes = await asyncio.gather(*(run(s) for s in scorers), return_exceptions=True)
        results: dict[str, dict[str, ProductScore]] = {}
        for scorer, outcome in zip(scorers, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                kind = "timeout" if isinstance(outcome, TimeoutError) else "error"
                if kind == "error":
                    log.warning("scorer %s failed: %r", scorer.name, outcome)
                label = _label(scorer)
                SCORER_FAILURES.labels(label, kind).inc()
                missing.append(label)
            else:
                name, scores = outcome
                results.setdefault(name, {}).update(scores)
        return results

    def _status_specs(self, catalogue: Catalogue) -> list[AggregateSpec]:
        """Product status plus the profile facts eligibility needs (the fast path's only store read)."""
        if self._status_for is None or self._status_for[0] is not catalogue:
            # the newest profile only: as of now it is visible, so the history's versions would go unread
            facts = [s for s in self.space.view if s.label in PROFILE_FACTS]
            self._status_for = (catalogue, [*facts, *status_specs(catalogue)])
        return self._status_for[1]

    def _specs(self, catalogue: Catalogue) -> list[AggregateSpec]:
        """The request's aggregate specs, rebuilt only when the catalogue object changes."""
        if self._specs_for is None or self._specs_for[0] is not catalogue:
            # as of now the newest profile is visible, so the history's versions of it would go unread
            self._specs_for = (catalogue, [s for s in all_specs(self.space, catalogue) if s.label not in HISTORY_FACTS])
        return self._specs_for[1]

    @staticmethod
    def _left(deadline: float) -> float:
        return max(deadline - time.perf_counter(), 0.001)

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


def _still_valid(cached: dict[str, Any], versions: dict[str, str], fingerprint: str) -> bool:
    """A cached answer stands only if the models and the catalogue served now made it (a new model version, a
    changed eligibility rule or a new manual rule makes it stale)."""
    return cached.get("model_versions") == versions and cached.get("catalogue") == fingerprint


def _stage(name: str, since: float) -> float:
    """Record the stage that began at ``since``; returns now, when the next one begins."""
    now = time.perf_counter()
    STAGE_LATENCY.labels(name).observe(now - since)
    return now


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task failed: %r", task.exception())


def _label(scorer: Scorer) -> str:
    """How a scorer is named in ``missing_scorers`` (a remote product scorer as ``xgboost:<product>``)."""
    return str(getattr(scorer, "label", scorer.name))
