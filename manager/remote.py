"""The manager's client for a per-product scorer running as its own service (``recommenders.scorer_service``,
`rtrec serve-scorer --product P`). It sends the client's feature vector (already aggregated), so the service
needs no store access, over the features of the model version the manager serves now: after a catalogue
change and a new training both sides move to the new version's features."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx
import numpy as np

from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.scorer import ProductScore


class RemoteScorer:
    """Scores one product by calling its scorer service; reported as ``xgboost`` (merged with in-process
    XGBoost results) and named ``xgboost:<product>`` when it is missing."""

    name = "xgboost"

    def __init__(self, product: str, url: str, space: Callable[[], FeatureSpace], client: httpx.AsyncClient) -> None:
        self.product = product
        self.url = url.rstrip("/")
        self.space = space  # the served version's features, asked at every call
        self.client = client
        self.label = f"xgboost:{product}"
        self.version = "remote"

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        if self.product not in products:
            return {}
        space = self.space()
        vector = [None if np.isnan(v) else float(v) for v in client.vector(space)]
        response = await self.client.post(
            f"{self.url}/v1/score", json={"client_id": client.client_id, "features": space.names, "vector": vector}
        )
        response.raise_for_status()
        body = response.json()
        self.version = body["version"]
        if body["score"] is None:
            return {}
        return {self.product: ProductScore(self.product, float(body["score"]), tuple(body["reasons"]))}


def remote_scorers(urls: dict[str, str], space: Callable[[], FeatureSpace]) -> list[RemoteScorer]:
    if not urls:
        return []
    client = httpx.AsyncClient(timeout=1.0)
    return [RemoteScorer(product, url, space, client) for product, url in urls.items()]
