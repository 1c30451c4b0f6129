"""`rtrec train`: point-in-time dataset -> per-product XGBoost + ALS + expert statistics -> holdout metrics ->
a versioned artifact directory, a report, and the LATEST pointer the servers hot-reload from.

Time split: the latest cut is the holdout (its labels end at `end`), earlier cuts train. Metrics: AUC and
PR-AUC per product (XGBoost), MAP@k of the blended ranking and of the popularity baseline over clients who
took up at least one product in the holdout window.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_store.client import FeatureStore
from feature_store.listings import interactions, list_subjects
from feature_store.ttl import TtlPolicy
from recommenders.als import ALSScorer, interaction_matrix, train_als
from recommenders.catalogue import Catalogue, load_catalogue
from recommenders.config import TrainingConfig as TrainingSettings
from recommenders.dataset import DAY, Dataset, build_dataset
from recommenders.decision import blend
from recommenders.evaluation import MIN_POSITIVES, Interval, auc_interval, mean_interval, ndcg_at_k, paired_difference
from recommenders.expert import ExpertScorer, _squash
from recommenders.profile import FeatureSpace
from recommenders.scorer import ProductScore
from recommenders.xgb import XGBoostScorer

XGB_PARAMS = {
    "objective": "binary:logistic",
    "max_depth": 4,
    "eta": 0.1,
    "subsample": 0.9,
    "min_child_weight": 2,
    "eval_metric": "logloss",
    "nthread": 2,
    "seed": 7,
}
XGB_ROUNDS = 150


@dataclass(frozen=True)
class TrainingConfig:
    end: float | None = None  # default: now
    horizon_days: float = 30.0
    step_days: float = 30.0
    cuts: int = 5
    k: int = 3
    progress: bool = True


def population_stats(squashed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of each (signed-log) feature over the clients that have it; a feature nobody has
    (Berka has no salary flag, for instance) gets mean 0 and spread 1 instead of NaN."""
    present = ~np.isnan(squashed)
    counts = present.sum(axis=0)
    filled = np.where(present, squashed, 0.0)
    mean = filled.sum(axis=0) / np.maximum(counts, 1)
    spread = np.sqrt((np.where(present, squashed - mean, 0.0) ** 2).sum(axis=0) / np.maximum(counts, 1))
    return mean.astype(np.float32), np.where(counts > 1, spread, 1.0).astype(np.float32)


def cut_times(config: TrainingConfig) -> list[float]:
    end = config.end if config.end is not None else time.time()
    latest = end - config.horizon_days * DAY
    return sorted(latest - i * config.step_days * DAY for i in range(config.cuts))


def average_precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """AP@k of a ranking (a product listed twice counts once, where it first appears); 0 with nothing relevant."""
    hits, total, seen = 0, 0.0, set()
    for position, product in enumerate(ranked[:k], start=1):
        if product in relevant and product not in seen:
            seen.add(product)
            hits += 1
            total += hits / position
    return total / min(len(relevant), k) if relevant else 0.0


def _train_xgb(data: Dataset, products: list[str], names: list[str]) -> dict[str, xgb.Booster]:
    boosters = {}
    for j, product in enumerate(products):
        rows = data.mask[:, j] > 0
        y = data.labels[rows, j]
        if y.sum() < 3 or y.sum() == len(y):
            continue  # not enough signal: the expert and ALS cover this product
        matrix = xgb.DMatrix(data.features[rows], label=y, feature_names=names)
        # no class re-weighting: probabilities must stay calibrated to be comparable across products
        boosters[product] = xgb.train(XGB_PARAMS, matrix, num_boost_round=XGB_ROUNDS)
    return boosters


def _als_inputs(data: Dataset, products: list[str]) -> list[tuple[str, str, str]]:
    rows = []
    for snapshot in data.snapshots:
        rows += [(snapshot.client_id, p, "held") for p in snapshot.held if p in products]
        rows += [(snapshot.client_id, p, "applied") for p in snapshot.applied if p in products]
    return rows


def evaluate(
    holdout: Dataset,
    products: list[str],
    xgb_scorer: XGBoostScorer,
    als: ALSScorer | None,
    expert: ExpertScorer,
    popularity: dict[str, float],
    weights: dict[str, float],
    k: int,
    *,
    segment_popularity: dict[str, dict[str, float]] | None = None,
    logistic: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Holdout metrics, scoring with the same scorer objects and the same blend the server uses, beside the
    baselines (popularity, the expert portraits alone, and when given popularity per segment and a logistic
    regression's holdout scores per product). Every ranking's MAP@k and NDCG@k comes with a 95 % bootstrap
    interval over clients, and the blend's paired difference with each other ranking with its interval."""
    matrix = xgb.DMatrix(holdout.features, feature_names=xgb_scorer.space.names)
    xgb_scores = {p: b.predict(matrix) for p, b in xgb_scorer.boosters.items()}
    per_product = {}
    for j, product in enumerate(products):
        rows = holdout.mask[:, j] > 0
        y = holdout.labels[rows, j]
        entry: dict[str, Any] = {"positives": int(y.sum()), "rows": int(rows.sum())}
        if product in xgb_scores and 0 < y.sum() < len(y):
            entry["auc"] = float(roc_auc_score(y, xgb_scores[product][rows]))
            entry["pr_auc"] = float(average_precision_score(y, xgb_scores[product][rows]))
            entry["pr_auc_base_rate"] = float(y.mean())
            entry["auc_interval"] = _listed(auc_interval(y, xgb_scores[product][rows]))
            if logistic is not None and product in logistic:
                entry["auc_logistic_interval"] = _listed(auc_interval(y, logistic[product][rows]))
            entry["too_few_positives"] = bool(y.sum() < MIN_POSITIVES)
        per_product[product] = entry

    ap: dict[str, list[float]] = {}
    ndcg: dict[str, list[float]] = {}
    for i, snapshot in enumerate(holdout.snapshots):
        allowed = [p for j, p in enumerate(products) if holdout.mask[i, j] > 0]
        relevant = {p for j, p in enumerate(products) if holdout.mask[i, j] > 0 and holdout.labels[i, j] > 0}
        if not relevant:
            continue
        expert_scores = expert.score_row(holdout.features[i], allowed)
        results = {
            "xgboost": {p: ProductScore(p, float(xgb_scores[p][i])) for p in allowed if p in xgb_scores},
            "expert": expert_scores,
        }
        if als is not None:
            results["als"] = als.score_vector(als.client_vector(snapshot), allowed)
        blended = blend(allowed, results, weights, popularity)
        scores: dict[str, dict[str, float]] = {
            "blend": {p: blended[p][0] for p in allowed},
            "xgboost": {p: float(xgb_scores[p][i]) if p in xgb_scores else 0.0 for p in allowed},
            "popularity": {p: popularity.get(p, 0.0) for p in allowed},
            "expert": {p: expert_scores[p].score if p in expert_scores else 0.0 for p in allowed},
        }
        if segment_popularity is not None:
            by_segment = segment_popularity.get(snapshot.segment or "", popularity)
            scores["segment_popularity"] = {p: by_segment.get(p, popularity.get(p, 0.0)) for p in allowed}
        if logistic is not None:
            scores["logistic_regression"] = {p: float(logistic[p][i]) if p in logistic else 0.0 for p in allowed}
        for name, by_product in scores.items():
            ranked = sorted(allowed, key=lambda p: -by_product[p])
            ap.setdefault(name, []).append(average_precision_at_k(ranked, relevant, k))
            ndcg.setdefault(name, []).append(ndcg_at_k(ranked, relevant, k))
    return {
        "per_product": per_product,
        f"map_at_{k}": float(np.mean(ap["blend"])) if ap else None,
        f"map_at_{k}_xgboost": float(np.mean(ap["xgboost"])) if ap else None,
        f"map_at_{k}_popularity": float(np.mean(ap["popularity"])) if ap else None,
        "evaluated_clients": len(ap.get("blend", [])),
        "rankings": {
            name: {
                f"map_at_{k}": mean_interval(ap[name]).as_list(),
                f"ndcg_at_{k}": mean_interval(ndcg[name]).as_list(),
            }
            for name in ap
        },
        "blend_minus": {name: paired_difference(ap["blend"], ap[name]).as_list() for name in ap if name != "blend"},
    }


def _listed(interval: Interval | None) -> list[float] | None:
    return interval.as_list() if interval is not None else None


@dataclass
class FittedModels:
    """What training fits on the training cuts (the served XGBoost boosters, the expert's population
    statistics, product popularity)."""

    boosters: dict[str, xgb.Booster]
    mean: np.ndarray
    std: np.ndarray
    popularity: dict[str, float]
    train_set: Dataset  # the baselines of the evaluation are fitted on it too


async def train(
    store: FeatureStore,
    space: FeatureSpace,
    catalogue: Catalogue,
    models_dir: Path,
    config: TrainingConfig = TrainingConfig(),
    subjects: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train, evaluate, write a new version and point LATEST at it; returns the version's meta."""
    products = catalogue.ids
    clients = list(subjects) if subjects is not None else await list_subjects(store)
    cuts = cut_times(config)
    data = await _point_in_time_rows(store, space, catalogue, clients, cuts, config)
    train_set, holdout = _split_at_holdout(data, max(cuts))
    fitted = _fit(train_set, products, space.names)
    metrics = _evaluate_holdout(holdout, products, space, catalogue, fitted, config.k)
    serve_matrix, serve_clients = await _serving_interactions(store, products, subjects)
    meta = {
        "version": datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%f"),
        "created_at": time.time(),
        "features": space.names,
        "products": products,
        "xgboost_products": sorted(fitted.boosters),
        "popularity": fitted.popularity,
        "metrics": metrics,
        "training": {
            "cuts": cuts,
            "horizon_days": config.horizon_days,
            "train_rows": len(train_set.clients),
            "holdout_rows": len(holdout.clients),
            "clients": len(clients),
        },
    }
    _write_version(models_dir, meta, fitted, serve_matrix, serve_clients, holdout)
    return meta


async def _point_in_time_rows(
    store: FeatureStore,
    space: FeatureSpace,
    catalogue: Catalogue,
    clients: list[str],
    cuts: list[float],
    config: TrainingConfig,
) -> Dataset:
    """The serving view of every client as of every cut, with the labels of the horizon after it."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not config.progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("point-in-time features", total=len(clients) * len(cuts))
        return await build_dataset(
            store, space, catalogue, clients, cuts, config.horizon_days, progress=lambda n: bar.advance(task, n)
        )


def _split_at_holdout(data: Dataset, holdout_cut: float) -> tuple[Dataset, Dataset]:
    """Earlier cuts train, the latest one is the holdout (a time split: nothing learns from the future)."""
    train_set, holdout = data.where(data.cut < holdout_cut), data.where(data.cut >= holdout_cut)
    if len(train_set.clients) == 0 or len(holdout.clients) == 0:
        raise ValueError("not enough history to train: no rows before or at the holdout cut")
    return train_set, holdout


def _fit(train_set: Dataset, products: list[str], names: list[str]) -> FittedModels:
    boosters = _train_xgb(train_set, products, names)
    mean, std = population_stats(_squash(train_set.features))
    rate = (train_set.labels * train_set.mask).sum(0) / np.maximum(train_set.mask.sum(0), 1)
    return FittedModels(boosters, mean, std, {p: float(rate[j]) for j, p in enumerate(products)}, train_set)


def _evaluate_holdout(
    holdout: Dataset,
    products: list[str],
    space: FeatureSpace,
    catalogue: Catalogue,
    fitted: FittedModels,
    k: int,
) -> dict[str, Any]:
    """Every scorer and the blend on the holdout cut. ALS for evaluation learns the clients' products as of
    the holdout cut (nothing from after it)."""
    expert = ExpertScorer("eval", space, catalogue, fitted.mean, fitted.std, fitted.popularity)
    eval_matrix, eval_clients = interaction_matrix(_als_inputs(holdout, products), products)
    eval_als = None
    if eval_matrix.nnz:
        client_f, product_f = train_als(eval_matrix)
        eval_als = ALSScorer(
            "eval",
            products,
            {c: i for i, c in enumerate(eval_clients)},
            client_f,
            product_f,
            np.array([fitted.popularity[p] for p in products], dtype=np.float32),
        )
    xgb_scorer = XGBoostScorer("eval", space, fitted.boosters)
    weights = catalogue.decision.weights
    return evaluate(
        holdout,
        products,
        xgb_scorer,
        eval_als,
        expert,
        fitted.popularity,
        weights,
        k,
        segment_popularity=_segment_popularity(fitted.train_set, products),
        logistic=_logistic_scores(fitted.train_set, holdout, products),
    )


def _segment_popularity(train_set: Dataset, products: list[str]) -> dict[str, dict[str, float]]:
    """Baseline: each product's uptake rate among the training rows of the client's segment."""
    segments = np.array([s.segment or "" for s in train_set.snapshots])
    out = {}
    for segment in set(segments.tolist()):
        rows = segments == segment
        taken = (train_set.labels[rows] * train_set.mask[rows]).sum(0)
        rate = taken / np.maximum(train_set.mask[rows].sum(0), 1)
        out[segment] = {p: float(rate[j]) for j, p in enumerate(products)}
    return out


def _logistic_scores(train_set: Dataset, holdout: Dataset, products: list[str]) -> dict[str, np.ndarray]:
    """Baseline: a logistic regression per product on the same features (signed log, median-imputed,
    standardised), fitted on the training cuts; its probabilities for every holdout row."""
    scores = {}
    for j, product in enumerate(products):
        rows = train_set.mask[:, j] > 0
        y = train_set.labels[rows, j]
        if not 0 < y.sum() < len(y):
            continue
        model = make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(max_iter=500),
        )
        model.fit(_squash(train_set.features[rows]), y)
        scores[product] = model.predict_proba(_squash(holdout.features))[:, 1]
    return scores


async def _serving_interactions(
    store: FeatureStore, products: list[str], subjects: Sequence[str] | None
) -> tuple[Any, list[str]]:
    """The served ALS learns from every client's current products (only ``subjects`` when given)."""
    serve_matrix, serve_clients = interaction_matrix(await interactions(store), products)
    if subjects is not None:
        wanted = set(subjects)
        keep = [i for i, c in enumerate(serve_clients) if c in wanted]
        serve_matrix, serve_clients = serve_matrix[keep], [serve_clients[i] for i in keep]
    return serve_matrix, serve_clients


def _write_version(
    models_dir: Path,
    meta: dict[str, Any],
    fitted: FittedModels,
    serve_matrix: Any,
    serve_clients: list[str],
    holdout: Dataset,
) -> None:
    """The version directory (models, statistics, meta, report), then LATEST pointed at it atomically."""
    products, directory = meta["products"], models_dir / meta["version"]
    directory.mkdir(parents=True, exist_ok=True)
    for product, booster in fitted.boosters.items():
        booster.save_model(directory / f"xgb_{product}.ubj")
    if serve_matrix.nnz:
        client_factors, product_factors = train_als(serve_matrix)
        np.savez(
            directory / "als.npz",
            clients=np.array(serve_clients),
            products=np.array(products),
            client_factors=client_factors,
            product_factors=product_factors,
            popularity=np.array([fitted.popularity[p] for p in products], dtype=np.float32),
        )
    np.savez(directory / "expert_stats.npz", mean=fitted.mean, std=fitted.std)
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    from recommenders.report import write_report

    write_report(directory, meta, holdout, fitted.boosters, meta["features"], products)
    pointer = models_dir / "LATEST.tmp"
    pointer.write_text(meta["version"])
    os.replace(pointer, models_dir / "LATEST")  # atomic: servers never read half a name


async def train_configured(settings: TrainingSettings, config: TrainingConfig = TrainingConfig()) -> dict[str, Any]:
    """`train` with everything taken from the settings: the store, the serving view, the catalogue and the
    models directory (what `rtrec train` and the demo run)."""
    rec = settings.recommendations
    async with FeatureStore(settings.store, ttl=TtlPolicy.from_settings(settings.ttl)) as store:
        return await train(
            store,
            FeatureSpace.from_view(settings.views[rec.view]),
            load_catalogue(rec.catalogue),
            rec.models_dir,
            config,
        )
