"""Prometheus metrics of the API process (``GET /metrics``)."""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

HTTP_LATENCY = Histogram(
    "rtrec_http_request_seconds",
    "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STORE_LATENCY = Histogram(
    "rtrec_store_call_seconds",
    "Feature store call latency seen by the API",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
)
FEATURES_WRITTEN = Counter("rtrec_api_features_written_total", "Features written through the HTTP API")
RECOMMENDATION_LATENCY = Histogram(
    "rtrec_recommendation_seconds",
    "Recommendation request latency inside the manager",
    ["cached"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SCORER_LATENCY = Histogram(
    "rtrec_scorer_seconds",
    "Scorer latency",
    ["scorer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
# Where a recommendation's time goes, stage by stage (the serve benchmark prints the split from these).
STAGE_LATENCY = Histogram(
    "rtrec_recommendation_stage_seconds",
    "Time of each stage of a recommendation: read (one store call: the cached answer or the client's facts),"
    " snapshot (facts to model inputs), scorers (every scorer, concurrently), decision (filter, blend, rules)",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
SCORER_FAILURES = Counter("rtrec_scorer_failures_total", "Scorers that timed out or failed", ["scorer", "kind"])
DEGRADED_ANSWERS = Counter("rtrec_degraded_answers_total", "Answers given without every scorer")
FACTS_UNAVAILABLE_ANSWERS = Counter(
    "rtrec_facts_unavailable_answers_total",
    "Empty answers because no copy of the store gave the client's status in time (fail closed)",
)
AUDIT_DROPPED = Counter("rtrec_audit_dropped_total", "Recommendation audit messages not sent to Kafka")


def metrics_registry() -> CollectorRegistry:
    """What `/metrics` reports: with several API workers (``PROMETHEUS_MULTIPROC_DIR`` set by `rtrec serve`),
    the sum over all of them, whichever worker answers the scrape; otherwise this process's own."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


class LatencyMiddleware:
    """Request latency per route as a plain ASGI middleware (Starlette's BaseHTTPMiddleware costs far more
    per request, which showed in the serving benchmark)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Handlers read this to count time spent queued in the process against their budget.
        scope.setdefault("state", {})["started"] = started
        status = {"code": 500}

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_LATENCY.labels(scope["method"], path, str(status["code"])).observe(time.perf_counter() - started)


FAST_LANE_ANSWERS = Counter(
    "rtrec_fast_lane_answers_total", "Recommendation requests answered by the plain ASGI lane (manager.fast_lane)"
)
SHED_ANSWERS = Counter(
    "rtrec_shed_answers_total",
    "Answers given on the fast path (reason load or budget) or shed with nothing offered (reason overload)",
    ["reason"],
)
