"""Per-product XGBoost propensity models. One request builds the client's row once and runs every product's
model on it in a worker thread (keeps the event loop free); contributions (the reasons) are computed only
for this scorer's top candidates, since they cost more than a prediction."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xgboost as xgb

from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.reasons import describe
from recommenders.scorer import ProductScore

EXPLAINED = 3
REASONS_PER_PRODUCT = 3


class XGBoostScorer:
    name = "xgboost"

    def __init__(self, version: str, space: FeatureSpace, boosters: dict[str, xgb.Booster]) -> None:
        self.version = version
        self.space = space
        self.boosters = boosters

    @classmethod
    def load(cls, directory: Path, version: str, space: FeatureSpace, products: Sequence[str]) -> XGBoostScorer:
        boosters = {}
        for product in products:
            path = directory / f"xgb_{product}.ubj"
            if path.exists():
                booster = xgb.Booster()
                booster.load_model(path)
                booster.set_param({"nthread": 1})
                boosters[product] = booster
        return cls(version, space, boosters)

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        return await asyncio.to_thread(self.score_sync, client, products)

    def score_sync(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        return self.score_row(client.vector(self.space), products)

    def score_row(self, vector: np.ndarray, products: Sequence[str]) -> dict[str, ProductScore]:
        row = vector.reshape(1, -1)
        scores = {p: float(self.boosters[p].inplace_predict(row)[0]) for p in products if p in self.boosters}
        top = sorted(scores, key=scores.__getitem__, reverse=True)[:EXPLAINED]
        reasons: dict[str, tuple[str, ...]] = {}
        if top:
            matrix = xgb.DMatrix(row, feature_names=self.space.names)
            for product in top:
                contributions = self.boosters[product].predict(matrix, pred_contribs=True)[0][:-1]  # last: bias
                order = np.argsort(-contributions)[:REASONS_PER_PRODUCT]
                reasons[product] = tuple(
                    describe(self.space.names[i], float(contributions[i])) for i in order if contributions[i] > 0
                )
        return {p: ProductScore(p, s, reasons.get(p, ())) for p, s in scores.items()}
