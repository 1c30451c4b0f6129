"""Expert models for cold start: each product's portrait (catalogue config: feature -> weight) compared with
the client in one standardised vector space. Closeness is the weighted mean of the client's standardised
features on the portrait's axes (a client who is "high" where the portrait cares is close). Like every
scorer, the expert answers on the scale of uptake probability: the product's base rate (``prior``) scaled by
0..2 with closeness, so its scores blend with the calibrated XGBoost ones. Portraits are configuration, so a
new product or a changed portrait needs no release."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from recommenders.catalogue import Catalogue
from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.reasons import describe
from recommenders.scorer import ProductScore

DEFAULT_PRIOR = 0.1
# Standard scores are clipped here: no real client lies 50 deviations out, and beyond it exp() overflows.
Z_LIMIT = 50.0


def _squash(x: np.ndarray) -> np.ndarray:
    """Signed log: money amounts span orders of magnitude."""
    return np.sign(x) * np.log1p(np.abs(x))


class ExpertScorer:
    name = "expert"

    def __init__(
        self,
        version: str,
        space: FeatureSpace,
        catalogue: Catalogue,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        prior: dict[str, float] | None = None,
    ) -> None:
        self.version = version
        self.space = space
        self.catalogue = catalogue
        n = len(space.names)
        # population statistics of squashed features (from training); defaults make z = squashed / 5
        self.mean = mean if mean is not None else np.zeros(n, dtype=np.float32)
        self.std = std if std is not None else np.full(n, 5.0, dtype=np.float32)
        self.index = {name: i for i, name in enumerate(space.names)}
        self.prior = prior or {}

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        return self.score_row(client.vector(self.space), products)

    def score_row(self, row: np.ndarray, products: Sequence[str]) -> dict[str, ProductScore]:
        z = (_squash(row) - self.mean) / np.where(self.std > 0, self.std, 1.0)
        z = np.nan_to_num(z, nan=-1.0)  # a missing behaviour counts as "low"
        # a stored value past any real client's (a writer may put registered_at = 1e44) must not overflow exp()
        z = np.clip(z, -Z_LIMIT, Z_LIMIT)
        out = {}
        for product in products:
            portrait = self.catalogue.product(product).portrait if product in self.catalogue.ids else {}
            axes = [(self.index[f], w) for f, w in portrait.items() if f in self.index]
            if not axes:
                continue
            closeness = sum(w * float(z[i]) for i, w in axes) / sum(w for _, w in axes)
            strongest = sorted(axes, key=lambda a: -a[1] * float(z[a[0]]))[:2]
            reasons = tuple(describe(self.space.names[i], float(z[i])) for i, _ in strongest if z[i] > 0)
            likelihood = 2.0 / (1.0 + math.exp(-2.0 * closeness))  # 0..2, 1 for an average client
            out[product] = ProductScore(product, min(1.0, self.prior.get(product, DEFAULT_PRIOR) * likelihood), reasons)
        return out
