"""The manager's client for a per-product scorer running as its own service (``recommenders.scorer_service``,
`rtrec serve-scorer --product P`). It sends the client's feature vector (already aggregated), so the service
needs no store access; both sides share the feature order."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.scorer import ProductScore


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
