"""The FastAPI application: lifespan opens the store client, routers hold the endpoints, errors map to HTTP
statuses at one place (``manager.errors``). OpenAPI at /docs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feature_store.client import FeatureStore
from feature_store.errors import StoreError
from feature_store.serving import ServingStore
from feature_store.ttl import TtlPolicy
from manager.audit import AuditLog
from manager.config import AppConfig
from manager.errors import install_error_handlers
from manager.fast_lane import RecommendationFastLane
from manager.features_api import compile_views
from manager.features_api import router as features_router
from manager.loop_lag import LoopLag
from manager.metrics import LatencyMiddleware, metrics_registry
from manager.middleware import BodyLimitMiddleware, RequestIdMiddleware
from manager.recommend import RecommendationService
from manager.recommendations_api import router as recommendations_router
from manager.remote import remote_scorers
from manager.replays_api import router as replays_router
from manager.store_watch import StoreWatch
from recommenders.catalogue import CatalogueFile
from recommenders.profile import model_space
from recommenders.registry import ModelRegistry
from replay.registry import ReplayRegistry

log = logging.getLogger("rtrec.api")


def create_app(settings: AppConfig) -> FastAPI:
    views = compile_views(settings.views)

    rec = settings.recommendations

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = FeatureStore(settings.store, ttl=TtlPolicy.from_settings(settings.ttl), role="api")
        await store.start()
        catalogue = CatalogueFile(rec.catalogue)
        products = catalogue()
        space = model_space(settings.views[rec.view], products)
        registry = ModelRegistry(rec.models_dir, space, products)
        registry.reload_if_changed()
        watcher = asyncio.create_task(registry.watch(rec.reload_interval_s, catalogue))
        store_watch = StoreWatch(store)
        watching_store = asyncio.create_task(store_watch.run())
        loop_lag = LoopLag()
        watching_loop = asyncio.create_task(loop_lag.run())
        with contextlib.suppress(TimeoutError):  # serve with gauges filled, unless the store is slow to answer
            await asyncio.wait_for(store_watch.first_round_done.wait(), timeout=3.0)
        audit = AuditLog(settings) if rec.audit_to_kafka else None
        if audit is not None:
            await audit.start()
        app.state.store = store
        app.state.store_watch = store_watch
        app.state.catalogue = catalogue
        app.state.registry = registry
        app.state.replays = ReplayRegistry(settings, store)
        app.state.recommendations = RecommendationService(
            ServingStore(store, hedge_after_s=rec.hedge_after_s),
            registry,
            catalogue,
            space,
            scorer_timeouts=rec.scorer_timeouts_s,
            extra_scorers=remote_scorers(rec.remote_scorers, registry.served_space),
            audit=audit,
            cache_enabled=rec.cache,
            loop_lag=loop_lag,
            accepted_ahead_s=settings.consumer.max_ahead_s,
        )
        try:
            yield
        finally:
            await app.state.replays.stop()
            watcher.cancel()
            watching_store.cancel()
            watching_loop.cancel()
            if audit is not None:
                await audit.stop()
            await store.stop()

    app = FastAPI(
        title="rtrec: real-time feature store and recommendations",
        version="0.1.0",
        lifespan=lifespan,
        description="Feature store and recommendation API for the mobile banking backend. "
        "Authorization: Bearer <key>; roles reader < writer < operator.",
    )
    app.add_middleware(RecommendationFastLane)  # innermost: ids, latency metrics and body limits still apply
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(LatencyMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every response and log line has the id
    install_error_handlers(app)
    app.state.settings = settings
    app.state.views = views
    app.include_router(features_router)
    app.include_router(recommendations_router)
    app.include_router(replays_router)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready(request: Request) -> JSONResponse:
        """Every replica set has a reachable master (readiness). ``warnings`` lists store problems seen by
        the last health round (memory near its limit, a replica not following) that do not stop serving."""
        store: FeatureStore = request.app.state.store
        unreachable = {}
        for rs in store.replicasets.values():
            try:
                await rs.call("ping", [], timeout=1.0)
            except StoreError as exc:  # the details (hosts, store messages) go to the log, not to the caller
                log.warning("readiness: replica set %s: %s", rs.id, exc)
                unreachable[str(rs.id)] = "no reachable master"
        warnings = [] if unreachable else request.app.state.store_watch.problems
        if unreachable:
            body = {"status": "not ready", "replicasets": unreachable, "warnings": warnings}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "warnings": warnings})

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)

    return app
