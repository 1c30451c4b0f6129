"""A per-product XGBoost scorer as its own HTTP service (`rtrec serve-scorer --product P`, the field report's
"a microservice per product"). It receives the client's feature vector from the manager (already aggregated,
in the shared feature order of the view), so it needs no store access; its models hot-reload like the API's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from recommenders.catalogue import load_catalogue
from recommenders.config import RecommendationSettings
from recommenders.profile import model_space
from recommenders.registry import ModelRegistry


class ScorerServiceConfig(Protocol):
    @property
    def recommendations(self) -> RecommendationSettings: ...
    @property
    def views(self) -> dict[str, list[str]]: ...


class ScoreRequest(BaseModel):
    client_id: str
    features: list[str]
    vector: list[float | None]


class ScoreResponse(BaseModel):
    product: str
    score: float | None
    reasons: list[str]
    version: str


def create_scorer_app(settings: ScorerServiceConfig, product: str) -> FastAPI:
    rec = settings.recommendations
    catalogue = load_catalogue(rec.catalogue)
    space = model_space(settings.views[rec.view], catalogue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(rec.models_dir, space, catalogue)
        registry.reload_if_changed()
        app.state.registry = registry
        watcher = asyncio.create_task(registry.watch(rec.reload_interval_s))
        try:
            yield
        finally:
            watcher.cancel()

    app = FastAPI(title=f"rtrec scorer: {product}", lifespan=lifespan)

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(request: Request, body: ScoreRequest) -> dict[str, Any]:
        if body.features != space.names:
            raise HTTPException(422, "feature list differs from this scorer's view")
        models = request.app.state.registry.current
        if models.xgboost is None or product not in models.xgboost.boosters:
            return {"product": product, "score": None, "reasons": [], "version": models.version}
        row = np.array([np.nan if v is None else v for v in body.vector], dtype=np.float32)
        result = models.xgboost.score_row(row, [product])[product]
        return {"product": product, "score": result.score, "reasons": list(result.reasons), "version": models.version}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "product": product}

    return app
