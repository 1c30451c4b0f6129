"""A per-product XGBoost scorer as its own HTTP service (`rtrec serve-scorer --product P`, the field report's
"a microservice per product"). It receives the client's feature vector from the manager (already aggregated,
in the feature order of the model version the manager serves), so it needs no store access. Its models and
the catalogue hot-reload like the API's: after a product change and a new training both sides move to the new
version and its features; a request naming other features than the served version's is answered 409 (the two
sides are between versions for at most a reload interval), never scored on misplaced features."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from recommenders.catalogue import CatalogueFile
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
    catalogue = CatalogueFile(rec.catalogue)
    space = model_space(settings.views[rec.view], catalogue())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(rec.models_dir, space, catalogue())
        registry.reload_if_changed()
        app.state.registry = registry
        watcher = asyncio.create_task(registry.watch(rec.reload_interval_s, catalogue))
        try:
            yield
        finally:
            watcher.cancel()

    app = FastAPI(title=f"rtrec scorer: {product}", lifespan=lifespan)

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(request: Request, body: ScoreRequest) -> dict[str, Any]:
        if len(body.features) != len(body.vector):
            raise HTTPException(422, f"{len(body.features)} feature names for {len(body.vector)} values")
        models = request.app.state.registry.current
        if body.features != models.expert.space.names:
            raise HTTPException(
                409,
                f"this scorer serves model version {models.version}, trained on other features than the request "
                "names (a model or catalogue change is being rolled out: both sides reload within seconds)",
            )
        if models.xgboost is None or product not in models.xgboost.boosters:
            return {"product": product, "score": None, "reasons": [], "version": models.version}
        row = np.array([np.nan if v is None else v for v in body.vector], dtype=np.float32)
        result = models.xgboost.score_row(row, [product])[product]
        return {"product": product, "score": result.score, "reasons": list(result.reasons), "version": models.version}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "product": product}

    return app
