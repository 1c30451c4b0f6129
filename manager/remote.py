"""A per-product XGBoost scorer as its own HTTP service (`rtrec serve-scorer --product P`, the field report's
"a microservice per product") and the manager's client for it. The manager sends the client's feature
vector (already aggregated), so the service needs no store access; both sides share the feature order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from manager.config import AppConfig
from recommenders.catalogue import load_catalogue
from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.registry import ModelRegistry
from recommenders.scorer import ProductScore


class ScoreRequest(BaseModel):
    client_id: str
    features: list[str]
    vector: list[float | None]


class ScoreResponse(BaseModel):
    product: str
    score: float | None
    reasons: list[str]
    version: str


class RemoteScorer:
    """Scores one product by calling its scorer service; reported as ``xgboost`` (merged with in-process
    XGBoost results) and named ``xgboost:<product>`` when it is missing."""

    name = "xgboost"

    def __init__(self, product: str, url: str, space: FeatureSpace, client: httpx.AsyncClient) -> None:
        self.product = product
        self.url = url.rstrip("/")
        self.space = space
        self.client = client
        self.label = f"xgboost:{product}"
        self.version = "remote"

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        if self.product not in products:
            return {}
        vector = [None if np.isnan(v) else float(v) for v in client.vector(self.space)]
        response = await self.client.post(
            f"{self.url}/v1/score", json={"client_id": client.client_id, "features": self.space.names, "vector": vector}
        )
        response.raise_for_status()
        body = response.json()
        self.version = body["version"]
        if body["score"] is None:
            return {}
        return {self.product: ProductScore(self.product, float(body["score"]), tuple(body["reasons"]))}


def remote_scorers(urls: dict[str, str], space: FeatureSpace | None = None) -> list[RemoteScorer]:
    if not urls:
        return []
    assert space is not None, "remote scorers need the feature space"
    client = httpx.AsyncClient(timeout=1.0)
    return [RemoteScorer(product, url, space, client) for product, url in urls.items()]


def create_scorer_app(settings: AppConfig, product: str) -> FastAPI:
    rec = settings.recommendations
    space = FeatureSpace.from_view(settings.views[rec.view])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        registry = ModelRegistry(rec.models_dir, space, load_catalogue(rec.catalogue))
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
