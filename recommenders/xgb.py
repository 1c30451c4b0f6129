"""Per-product XGBoost propensity models, scored in micro-batches.

XGBoost trains the models; requests are scored by ``recommenders.forest``, which walks every product's trees in
one numpy pass (the same probabilities and contributions as XGBoost, tested): one row for nine products costs
about 0.15 ms with reasons, against 0.85 ms through nine ``Booster.predict`` calls and their contributions
(`score_rows`, measured in docs/benchmarks.md). Concurrent requests are still batched naturally: each request
queues its row; one task takes everything queued, scores it, and resolves the requests; under low load a batch
is one row, under high load batches grow by themselves, without a waiting window. The batch is scored on the
event loop itself: at these costs a hop to a thread (and the GIL handed back and forth with the loop) cost more
than it saved (docs/benchmarks.md). Reasons come from approximate (Saabas) contributions, computed only for
each request's top products.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

from recommenders.forest import Forest
from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.reasons import describe
from recommenders.scorer import ProductScore

EXPLAINED = 3
REASONS_PER_PRODUCT = 3
MAX_BATCH = 256


@dataclass
class _Pending:
    row: np.ndarray
    products: Sequence[str]
    future: asyncio.Future[dict[str, ProductScore]]


class XGBoostScorer:
    name = "xgboost"

    def __init__(
        self, version: str, space: FeatureSpace, boosters: dict[str, xgb.Booster], typical: np.ndarray | None = None
    ) -> None:
        self.version = version
        self.space = space
        self.boosters = boosters
        self.forest = Forest.from_boosters(boosters)
        # typical (mean signed-log) value of each feature among training clients: a reason says "high" or
        # "low" by comparing the client with it, not by the sign of the contribution
        self.typical = typical if typical is not None else np.zeros(len(space.names), dtype=np.float32)
        self._queue: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None

    @classmethod
    def load(
        cls,
        directory: Path,
        version: str,
        space: FeatureSpace,
        products: Sequence[str],
        typical: np.ndarray | None = None,
        trained: Sequence[str] | None = None,
    ) -> XGBoostScorer:
        """The boosters of ``products``. ``trained`` (``meta.json``'s ``xgboost_products``) are the ones training
        wrote: a missing file among them is a partly copied version, refused (FileNotFoundError) rather than
        served with some products on base rates under the full version's name."""
        boosters = {}
        for product in products:
            path = directory / f"xgb_{product}.ubj"
            if trained is not None and product in trained and not path.exists():
                raise FileNotFoundError(f"{path.name} is missing though the version trained {product}")
            if path.exists():
                booster = xgb.Booster()
                booster.load_model(path)
                booster.set_param({"nthread": 1})
                boosters[product] = booster
        return cls(version, space, boosters, typical)

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        future: asyncio.Future[dict[str, ProductScore]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(client.vector(self.space), products, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # the requests ready in this turn of the loop queue their rows first: one batch
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            batch = [p for p in batch if not p.future.done()]  # requests whose budget already ran out
            if not batch:
                continue
            try:
                results = self.score_rows(np.vstack([p.row for p in batch]), [p.products for p in batch])
            except Exception as exc:  # a model failure fails these requests, not the worker
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
            await asyncio.sleep(0)  # other requests run between batches

    def score_row(self, vector: np.ndarray, products: Sequence[str]) -> dict[str, ProductScore]:
        return self.score_rows(vector.reshape(1, -1), [products])[0]

    def score_rows(self, matrix: np.ndarray, products: Sequence[Sequence[str]]) -> list[dict[str, ProductScore]]:
        """Scores (and reasons for each row's top products) of a batch of client rows: one walk of every
        product's trees (``recommenders.forest``) gives all scores and the paths the reasons are read from."""
        walk = self.forest.score(matrix)
        index = self.forest.index
        scores = [
            {p: float(walk.probabilities[i, index[p]]) for p in row_products if p in index}
            for i, row_products in enumerate(products)
        ]
        explain: dict[str, list[int]] = {}
        for i, row_scores in enumerate(scores):
            for product in sorted(row_scores, key=row_scores.__getitem__, reverse=True)[:EXPLAINED]:
                explain.setdefault(product, []).append(i)
        # a reason says "high" or "low" by comparing the client with the typical training client
        level = np.sign(matrix) * np.log1p(np.abs(matrix)) - self.typical
        # a reason must name something the client has: missing values take the trees' default branch and may
        # contribute, but "high balance" for a client without data would be false
        known = ~np.isnan(matrix)
        reasons: dict[tuple[int, str], tuple[str, ...]] = {}
        for product, rows in explain.items():
            contributions = self.forest.contributions(walk, rows, product, matrix.shape[1])
            contributions[~known[rows] | (contributions <= 0)] = -np.inf  # only what the client has, pushing up
            top = np.argsort(-contributions, axis=1)[:, :REASONS_PER_PRODUCT]
            for k, row_index in enumerate(rows):
                reasons[(row_index, product)] = tuple(
                    describe(self.space.names[j], float(level[row_index, j]))
                    for j in top[k]
                    if contributions[k, j] > -np.inf
                )
        return [
            {p: ProductScore(p, s, reasons.get((i, p), ())) for p, s in row_scores.items()}
            for i, row_scores in enumerate(scores)
        ]
