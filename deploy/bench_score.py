"""`rtrec bench score --json`: the XGBoost scorer's batch work (`XGBoostScorer.score_rows`) on the numpy forest
against the same work through XGBoost itself (one DMatrix, a ``predict`` per product, approximate contributions
for each row's top products), in one process, at several batch sizes.

The boosters have the shape training gives (the products of deploy/products.toml with models, 150 trees of
depth 4 over the default view's features, recommenders.boosting.XGB_PARAMS) and are fitted on random rows
with gaps, so the figures need no cluster. Both paths give the same scores and reasons (asserted here as well
as in tests/unit/test_forest.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from deploy.bench import _machine
from deploy.settings import Settings
from recommenders.boosting import XGB_PARAMS, XGB_ROUNDS
from recommenders.catalogue import load_catalogue
from recommenders.profile import ClientSnapshot, FeatureSpace, model_space
from recommenders.reasons import describe
from recommenders.xgb import EXPLAINED, REASONS_PER_PRODUCT, XGBoostScorer

BATCHES = (1, 8, 64)


def _through_xgboost(scorer: XGBoostScorer, matrix: np.ndarray, products: Sequence[Sequence[str]]) -> list[Any]:
    """What score_rows did before the forest: XGBoost's predict and contributions, per product."""
    dmatrix = xgb.DMatrix(matrix, feature_names=scorer.space.names, nthread=1)
    wanted = sorted({p for row in products for p in row})
    predictions = {p: scorer.boosters[p].predict(dmatrix, validate_features=False) for p in wanted}
    scores = [{p: float(predictions[p][i]) for p in row} for i, row in enumerate(products)]
    out = []
    contributions = {}
    for i, row_scores in enumerate(scores):
        reasons = {}
        for product in sorted(row_scores, key=row_scores.__getitem__, reverse=True)[:EXPLAINED]:
            if product not in contributions:
                contributions[product] = scorer.boosters[product].predict(
                    dmatrix, pred_contribs=True, approx_contribs=True, validate_features=False
                )
            values = contributions[product][i][:-1]
            known = ~np.isnan(matrix[i])
            order = [j for j in np.argsort(-values) if known[j] and values[j] > 0][:REASONS_PER_PRODUCT]
            level = np.sign(matrix[i]) * np.log1p(np.abs(matrix[i])) - scorer.typical
            reasons[product] = tuple(describe(scorer.space.names[j], float(level[j])) for j in order)
        out.append((row_scores, reasons))
    return out


def _ms_per_call(fn: Any, *args: Any, seconds: float = 0.5) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn(*args)
        calls += 1
    return round((time.perf_counter() - started) * 1000 / calls, 4)


def _client(space: FeatureSpace) -> ClientSnapshot:
    """A client with every view aggregate on record, so each behaviour ratio is computed."""
    values: dict[str, object] = {name: 1000.0 + i for i, name in enumerate(space.names)}
    return ClientSnapshot("bench", time.time(), values, "retail", 40.0, 400.0, set(), set())


def run_score(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    catalogue = load_catalogue(settings.recommendations.catalogue)
    space = model_space(settings.views[settings.recommendations.view], catalogue)
    products = catalogue.ids[:9]
    rng = np.random.default_rng(3)
    rows = (rng.lognormal(4, 2, size=(4000, len(space.names))) * rng.choice([-1, 1, 1, 1], (4000, 1))).astype(
        np.float32
    )
    rows[rng.random(rows.shape) < 0.3] = np.nan
    params = {**XGB_PARAMS, "nthread": 2}
    boosters = {}
    for j, product in enumerate(products):
        labels = (np.nan_to_num(rows[:, j % rows.shape[1]]) + rng.normal(0, 50, len(rows)) > 60).astype(np.float32)
        boosters[product] = xgb.train(params, xgb.DMatrix(rows, label=labels), num_boost_round=XGB_ROUNDS)
    for booster in boosters.values():
        booster.set_param({"nthread": 1})
    scorer = XGBoostScorer("bench", space, boosters)
    results = {}
    for batch in BATCHES:
        matrix, asked = rows[:batch], [products] * batch
        forest = scorer.score_rows(matrix, asked)
        reference = _through_xgboost(scorer, matrix, asked)
        for got, (scores, reasons) in zip(forest, reference, strict=True):
            assert all(abs(got[p].score - s) < 1e-5 for p, s in scores.items())
            assert all(got[p].reasons == r for p, r in reasons.items())
        xgboost_ms = _ms_per_call(_through_xgboost, scorer, matrix, asked)
        forest_ms = _ms_per_call(scorer.score_rows, matrix, asked)
        results[str(batch)] = {
            "xgboost_ms": xgboost_ms,
            "forest_ms": forest_ms,
            "speedup": round(xgboost_ms / forest_ms, 2),
        }
    return {
        "benchmark": "score",
        # a client's model vector (the view's values plus the derived facts and behaviour ratios), per request
        "vector_ms": _ms_per_call(_client(space).vector, space),
        "machine": _machine(),
        "products": len(products),
        "trees_per_product": XGB_ROUNDS,
        "depth": XGB_PARAMS["max_depth"],
        "features": len(space.names),
        "ms_per_batch_by_rows": results,
    }
