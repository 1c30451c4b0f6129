"""Recommendation endpoints for the mobile banking backend (reader role)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from feature_store.listings import interactions
from manager.auth import Reader, Scorer
from manager.recommend import RecommendationService

router = APIRouter(prefix="/v1")

ClientIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Recommendation(BaseModel):
    product: str
    score: float
    sources: list[str]
    reasons: list[str]


class RecommendationsResponse(BaseModel):
    client_id: str
    items: list[Recommendation]
    degraded: bool
    degraded_reason: str | None = Field(
        default=None, description="why the answer is degraded; an empty degraded answer means: show no offer"
    )
    missing_scorers: list[str]
    model_versions: dict[str, str]
    cached: bool
    facts_source: str | None = Field(
        default=None, description="where the client's status came from: master, replica <name>, or cache"
    )
    elapsed_ms: float


@router.get("/recommendations/{client_id}", response_model=RecommendationsResponse)
async def recommendations(
    request: Request,
    _: Reader,
    client_id: ClientIdPath,
    limit: Annotated[int | None, Query(ge=1, le=50)] = None,
) -> dict[str, Any]:
    """Products to show this client now: never one they hold, applied for or cannot get; always within the
    budget (scorers that did not answer in time are named in ``missing_scorers``)."""
    service: RecommendationService = request.app.state.recommendations
    return await service.recommend(client_id, limit, started=request.scope.get("state", {}).get("started"))


@router.get("/als/matrix")
async def als_matrix(request: Request, _: Scorer) -> dict[str, Any]:
    """The client x product interaction matrix the ALS scorer learns from (held = 1.0, applied = 0.5). Every
    client's holdings: only keys of the ``scorer`` role may read it."""
    rows = await interactions(request.app.state.store)
    products = request.app.state.catalogue().ids
    return {
        "products": products,
        "interactions": [{"client_id": s, "product": p, "kind": k} for s, p, k in rows if p in products],
    }
