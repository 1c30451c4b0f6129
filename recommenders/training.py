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
from sklearn.metrics import average_precision_score, roc_auc_score

from feature_store.client import FeatureStore
from feature_store.ttl import TtlPolicy
from recommenders.als import ALSScorer, interaction_matrix, train_als
from recommenders.catalogue import Catalogue, load_catalogue
from recommenders.config import TrainingConfig as TrainingSettings
from recommenders.dataset import DAY, Dataset, build_dataset
from recommenders.decision import blend
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
    hits, total = 0, 0.0
    for position, product in enumerate(ranked[:k], start=1):
        if product in relevant:
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
) -> dict[str, Any]:
    """Holdout metrics, scoring with the same scorer objects and the same blend the server uses."""
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
        per_product[product] = entry

    blended_ap, xgb_ap, popularity_ap = [], [], []
    for i, snapshot in enumerate(holdout.snapshots):
        allowed = [p for j, p in enumerate(products) if holdout.mask[i, j] > 0]
        relevant = {p for j, p in enumerate(products) if holdout.mask[i, j] > 0 and holdout.labels[i, j] > 0}
        if not relevant:
            continue
        results = {
            "xgboost": {p: ProductScore(p, float(xgb_scores[p][i])) for p in allowed if p in xgb_scores},
            "expert": expert.score_row(holdout.features[i], allowed),
        }
        if als is not None:
            results["als"] = als.score_vector(als.client_vector(snapshot), allowed)
        blended = blend(allowed, results, weights, popularity)
        blended_ap.append(average_precision_at_k(sorted(allowed, key=lambda p: -blended[p][0]), relevant, k))
        xgb_rank = sorted(allowed, key=lambda p: -float(xgb_scores[p][i]) if p in xgb_scores else 0.0)
        xgb_ap.append(average_precision_at_k(xgb_rank, relevant, k))
        popularity_ap.append(
            average_precision_at_k(sorted(allowed, key=lambda p: -popularity.get(p, 0.0)), relevant, k)
        )
    return {
        "per_product": per_product,
        f"map_at_{k}": float(np.mean(blended_ap)) if blended_ap else None,
        f"map_at_{k}_xgboost": float(np.mean(xgb_ap)) if xgb_ap else None,
        f"map_at_{k}_popularity": float(np.mean(popularity_ap)) if popularity_ap else None,
        "evaluated_clients": len(blended_ap),
    }


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
    names = space.names
    clients = list(subjects) if subjects is not None else await store.list_subjects()
    cuts = cut_times(config)
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
        data = await build_dataset(
            store, space, catalogue, clients, cuts, config.horizon_days, progress=lambda n: bar.advance(task, n)
        )
        bar.update(task, description="training models")
    holdout_cut = max(cuts)
    train_set, holdout = data.where(data.cut < holdout_cut), data.where(data.cut >= holdout_cut)
    if len(train_set.clients) == 0 or len(holdout.clients) == 0:
        raise ValueError("not enough history to train: no rows before or at the holdout cut")

    boosters = _train_xgb(train_set, products, names)
    mean, std = population_stats(_squash(train_set.features))
    rate = (train_set.labels * train_set.mask).sum(0) / np.maximum(train_set.mask.sum(0), 1)
    popularity = {p: float(rate[j]) for j, p in enumerate(products)}
    expert = ExpertScorer("eval", space, catalogue, mean, std, popularity)

    # ALS for evaluation learns the clients' products as of the holdout cut (nothing from after it).
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
            np.array([popularity[p] for p in products], dtype=np.float32),
        )
    metrics = evaluate(
        holdout,
        products,
        XGBoostScorer("eval", space, boosters),
        eval_als,
        expert,
        popularity,
        catalogue.decision.weights,
        config.k,
    )

    # The served ALS learns from every client's current products.
    serve_matrix, serve_clients = interaction_matrix(await store.interactions(), products)
    if subjects is not None:
        wanted = set(subjects)
        keep = [i for i, c in enumerate(serve_clients) if c in wanted]
        serve_matrix, serve_clients = serve_matrix[keep], [serve_clients[i] for i in keep]

    version = datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%f")
    directory = models_dir / version
    directory.mkdir(parents=True, exist_ok=True)
    for product, booster in boosters.items():
        booster.save_model(directory / f"xgb_{product}.ubj")
    if serve_matrix.nnz:
        client_factors, product_factors = train_als(serve_matrix)
        np.savez(
            directory / "als.npz",
            clients=np.array(serve_clients),
            products=np.array(products),
            client_factors=client_factors,
            product_factors=product_factors,
            popularity=np.array([popularity[p] for p in products], dtype=np.float32),
        )
    np.savez(directory / "expert_stats.npz", mean=mean, std=std)
    meta = {
        "version": version,
        "created_at": time.time(),
        "features": names,
        "products": products,
        "xgboost_products": sorted(boosters),
        "popularity": popularity,
        "metrics": metrics,
        "training": {
            "cuts": cuts,
            "horizon_days": config.horizon_days,
            "train_rows": len(train_set.clients),
            "holdout_rows": len(holdout.clients),
            "clients": len(clients),
        },
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    from recommenders.report import write_report

    write_report(directory, meta, holdout, boosters, names, products)
    pointer = models_dir / "LATEST.tmp"
    pointer.write_text(version)
    os.replace(pointer, models_dir / "LATEST")  # atomic: servers never read half a name
    return meta


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
