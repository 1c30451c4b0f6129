"""Holdout metrics: every scorer, the served blend and the baselines ranked on the same clients.

The blend is scored with the server's own function (``decision.blend``) from the same scorer objects; every
ranking's MAP@k and NDCG@k comes with a 95 % bootstrap interval over clients, the blend's paired gain over
each baseline with its interval, and what each source adds to the blend (the blend minus the blend without
that source, paired).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score

from recommenders.als import ALSScorer
from recommenders.baselines import base_rate_matrix
from recommenders.dataset import Dataset
from recommenders.decision import blend
from recommenders.evaluation import (
    MIN_POSITIVES,
    Interval,
    auc_difference,
    auc_interval,
    mean_interval,
    ndcg_at_k,
    paired_difference,
)
from recommenders.expert import ExpertScorer
from recommenders.scorer import ProductScore
from recommenders.stacking import average_precision_rows, blend_matrix
from recommenders.xgb import XGBoostScorer


def average_precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """AP@k of a ranking (a product listed twice counts once, where it first appears); 0 with nothing relevant."""
    hits, total, seen = 0, 0.0, set()
    for position, product in enumerate(ranked[:k], start=1):
        if product in relevant and product not in seen:
            seen.add(product)
            hits += 1
            total += hits / position
    return total / min(len(relevant), k) if relevant else 0.0


def score_sources(
    data: Dataset, products: list[str], xgb_scorer: XGBoostScorer, als: ALSScorer | None, expert: ExpertScorer
) -> dict[str, np.ndarray]:
    """rows x products uptake probabilities of each scorer, NaN where it gave none or the product was masked."""
    allowed = data.mask > 0
    shape = (len(data.snapshots), len(products))
    out = {"xgboost": np.full(shape, np.nan), "expert": np.full(shape, np.nan)}
    if len(data.snapshots) and xgb_scorer.boosters:
        matrix = xgb.DMatrix(data.features, feature_names=xgb_scorer.space.names)
        for j, product in enumerate(products):
            if product in xgb_scorer.boosters:
                out["xgboost"][:, j] = xgb_scorer.boosters[product].predict(matrix)
    if als is not None:
        out["als"] = np.full(shape, np.nan)
    for i, snapshot in enumerate(data.snapshots):
        scored = {"expert": expert.score_row(data.features[i], products)}
        if als is not None:
            scored["als"] = als.score_vector(als.client_vector(snapshot), products)
        for name, by_product in scored.items():
            for j, product in enumerate(products):
                if product in by_product:
                    out[name][i, j] = by_product[product].score
    return {name: np.where(allowed, matrix, np.nan) for name, matrix in out.items()}


def _results(sources: dict[str, np.ndarray], i: int, products: list[str]) -> dict[str, dict[str, ProductScore]]:
    return {
        name: {p: ProductScore(p, float(m[i, j])) for j, p in enumerate(products) if not np.isnan(m[i, j])}
        for name, m in sources.items()
    }


def evaluate(
    holdout: Dataset,
    products: list[str],
    xgb_scorer: XGBoostScorer,
    als: ALSScorer | None,
    expert: ExpertScorer,
    popularity: dict[str, float],
    weights: dict[str, float],
    k: int,
    **options: Any,
) -> dict[str, Any]:
    """Holdout metrics of these scorers on one cut: ``evaluate_sources`` of their scores."""
    sources = score_sources(holdout, products, xgb_scorer, als, expert)
    return evaluate_sources(holdout, products, sources, popularity, weights, k, **options)


def evaluate_sources(
    holdout: Dataset,
    products: list[str],
    sources: dict[str, np.ndarray],
    popularity: dict[str, float],
    weights: dict[str, float],
    k: int,
    *,
    segment_popularity: dict[str, dict[str, float]] | None = None,
    logistic: dict[str, np.ndarray] | None = None,
    values: dict[str, float] | None = None,
    references: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Holdout metrics (see the module) from the scorers' matrices (``score_sources``; a holdout of several
    cuts is scored cut by cut, each with its own ALS). With ``segment_popularity`` the blend's base rates are
    the client's segment's, as at serving time. With ``values`` (the catalogue's business values) the ranking
    the server shows, the blend times each product's value, is reported too (``blend_with_value``): what
    preferring valuable products costs in uptake. ``references`` (name -> rows x products) are ranked too: a
    simulated bank's own chances show how much of the generating signal the models recover. A client with rows
    at several cuts is resampled whole for every interval."""
    base = base_rate_matrix(holdout, products, segment_popularity or {}, popularity)
    column = {p: j for j, p in enumerate(products)}
    per_product = _per_product(holdout, products, sources["xgboost"], logistic, references or {})
    ap: dict[str, list[float]] = {}
    ndcg: dict[str, list[float]] = {}
    clients: list[str] = []  # of the rows with something to find, for resampling by client
    for i in range(len(holdout.snapshots)):
        allowed = [p for j, p in enumerate(products) if holdout.mask[i, j] > 0]
        relevant = {p for j, p in enumerate(products) if holdout.mask[i, j] > 0 and holdout.labels[i, j] > 0}
        if not relevant:
            continue
        clients.append(holdout.clients[i])
        row_base = dict(zip(products, base[i].tolist(), strict=True))
        blended = blend(allowed, _results(sources, i, products), weights, row_base)
        scores: dict[str, dict[str, float]] = {
            "blend": {p: blended[p][0] for p in allowed},
            "xgboost": {p: float(np.nan_to_num(sources["xgboost"][i, column[p]])) for p in allowed},
            "popularity": {p: popularity.get(p, 0.0) for p in allowed},
            "expert": {p: float(np.nan_to_num(sources["expert"][i, column[p]])) for p in allowed},
        }
        if values is not None:
            scores["blend_with_value"] = {p: blended[p][0] * values.get(p, 1.0) for p in allowed}
        if segment_popularity is not None:
            scores["segment_popularity"] = {p: row_base[p] for p in allowed}
        if logistic is not None:
            scores["logistic_regression"] = {p: float(logistic[p][i]) if p in logistic else 0.0 for p in allowed}
        for name, matrix in (references or {}).items():
            scores[name] = {p: float(matrix[i, column[p]]) for p in allowed}
        for name, by_product in scores.items():
            ranked = sorted(allowed, key=lambda p: -by_product[p])
            ap.setdefault(name, []).append(average_precision_at_k(ranked, relevant, k))
            ndcg.setdefault(name, []).append(ndcg_at_k(ranked, relevant, k))
    return {
        "per_product": per_product,
        f"map_at_{k}": float(np.mean(ap["blend"])) if ap else None,
        f"map_at_{k}_xgboost": float(np.mean(ap["xgboost"])) if ap else None,
        f"map_at_{k}_popularity": float(np.mean(ap["popularity"])) if ap else None,
        "evaluated_clients": len(ap.get("blend", [])),  # client-cuts with an uptake (one per client at one cut)
        "evaluated_distinct_clients": len(set(clients)),
        "blend_weights": weights,
        "rankings": {
            name: {
                f"map_at_{k}": mean_interval(ap[name], groups=clients).as_list(),
                f"ndcg_at_{k}": mean_interval(ndcg[name], groups=clients).as_list(),
            }
            for name in ap
        },
        "blend_minus": {
            name: paired_difference(ap["blend"], ap[name], groups=clients).as_list() for name in ap if name != "blend"
        },
        "source_gain": _source_gain(holdout, sources, base, weights, k, clients) if ap else {},
    }


def _source_gain(
    holdout: Dataset,
    sources: dict[str, np.ndarray],
    base: np.ndarray,
    weights: dict[str, float],
    k: int,
    clients: list[str],
) -> dict[str, list[float]]:
    """Per source the blend has weight on: MAP@k of the blend minus the blend without it, paired."""
    full = average_precision_rows(blend_matrix(sources, base, weights), holdout.labels, holdout.mask, k)
    reduced = {
        name: ({s: m for s, m in sources.items() if s != name}, weights)
        for name in sources
        if weights.get(name, 1.0) > 0
    }
    if weights.get("base_rate", 0.0) > 0:
        reduced["base_rate"] = (sources, {**weights, "base_rate": 0.0})
    return {
        name: paired_difference(
            full, average_precision_rows(blend_matrix(rest, base, w), holdout.labels, holdout.mask, k), groups=clients
        ).as_list()
        for name, (rest, w) in reduced.items()
    }


def _per_product(
    holdout: Dataset,
    products: list[str],
    xgb_scores: np.ndarray,
    logistic: dict[str, np.ndarray] | None,
    references: dict[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """AUC and PR-AUC of XGBoost per product (with intervals, and the logistic regression's AUC beside it), and
    each reference's AUC (``auc_<name>``: how predictable the product is from the simulator's own chances)."""
    per_product = {}
    for j, product in enumerate(products):
        rows = holdout.mask[:, j] > 0
        y = holdout.labels[rows, j]
        entry: dict[str, Any] = {"positives": int(y.sum()), "rows": int(rows.sum())}
        scores = xgb_scores[rows, j]
        clients = [c for c, kept in zip(holdout.clients, rows, strict=True) if kept]
        if not np.isnan(scores).all() and 0 < y.sum() < len(y):
            entry["auc"] = float(roc_auc_score(y, scores))
            entry["pr_auc"] = float(average_precision_score(y, scores))
            entry["pr_auc_base_rate"] = float(y.mean())
            entry["auc_interval"] = _listed(auc_interval(y, scores, groups=clients))
            if logistic is not None and product in logistic:
                other = logistic[product][rows]
                entry["auc_logistic_interval"] = _listed(auc_interval(y, other, groups=clients))
                entry["auc_minus_logistic"] = _listed(auc_difference(y, scores, other, groups=clients))
            for name, matrix in references.items():
                entry[f"auc_{name}"] = float(roc_auc_score(y, matrix[rows, j]))
            entry["too_few_positives"] = bool(y.sum() < MIN_POSITIVES)
        per_product[product] = entry
    return per_product


def _listed(interval: Interval | None) -> list[float] | None:
    return interval.as_list() if interval is not None else None
