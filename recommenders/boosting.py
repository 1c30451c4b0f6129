"""Per-product XGBoost: hyperparameters chosen on a validation cut, then fitted on every training cut.

A product has tens of positives among thousands of rows, so a fixed deep, long booster overfits (holdout AUC
near 0.5 for products a logistic regression ranks at 0.6-0.9). For each product a few shapes (depth and
minimum child weight) are trained on the cuts before the validation cut with early stopping on the validation
cut's log loss; the shape and tree count with the lowest loss are refitted on all training cuts. A product
with no positive on the validation cut keeps the default shape.

No class re-weighting: the probabilities must stay calibrated to be comparable across products in the blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from recommenders.dataset import Dataset

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
XGB_ROUNDS = 150  # the default shape's tree count (also what `rtrec bench score` builds)
SHAPES = (
    {"max_depth": 2, "min_child_weight": 1},
    {"max_depth": 3, "min_child_weight": 5},
    {"max_depth": 5, "min_child_weight": 10},
)
MAX_ROUNDS = 300
PATIENCE = 30  # rounds without a better validation loss before stopping
MIN_POSITIVES = 3  # fewer positives in the training rows: no booster (the expert and ALS cover the product)


@dataclass(frozen=True)
class BoosterShape:
    """What validation chose for one product (``validation_logloss`` None: nothing to validate on)."""

    params: dict[str, float]
    rounds: int
    validation_logloss: float | None = None


DEFAULT_SHAPE = BoosterShape({"max_depth": 4, "min_child_weight": 2}, XGB_ROUNDS)


def _rows(data: Dataset, j: int) -> tuple[np.ndarray, np.ndarray]:
    rows = data.mask[:, j] > 0
    return data.features[rows], data.labels[rows, j]


def _trainable(y: np.ndarray) -> bool:
    return bool(y.sum() >= MIN_POSITIVES and y.sum() < len(y))


def choose_shapes(
    fit_set: Dataset, validation: Dataset, products: list[str], names: list[str]
) -> tuple[dict[str, xgb.Booster], dict[str, BoosterShape]]:
    """Per product, the best shape on the validation cut and the booster fitted with it on ``fit_set`` (cut to
    its best tree count): the validation cut's out-of-sample scores come from these boosters."""
    boosters, shapes = {}, {}
    for j, product in enumerate(products):
        x, y = _rows(fit_set, j)
        if not _trainable(y):
            continue
        vx, vy = _rows(validation, j)
        train_matrix = xgb.DMatrix(x, label=y, feature_names=names)
        if vy.sum() == 0 or vy.sum() == len(vy):
            shapes[product] = DEFAULT_SHAPE
            boosters[product] = xgb.train({**XGB_PARAMS, **DEFAULT_SHAPE.params}, train_matrix, XGB_ROUNDS)
            continue
        valid = xgb.DMatrix(vx, label=vy, feature_names=names)
        best: tuple[float, xgb.Booster, BoosterShape] | None = None
        for shape in SHAPES:
            booster = xgb.train(
                {**XGB_PARAMS, **shape},
                train_matrix,
                MAX_ROUNDS,
                evals=[(valid, "validation")],
                early_stopping_rounds=PATIENCE,
                verbose_eval=False,
            )
            loss, rounds = float(booster.best_score), booster.best_iteration + 1
            if best is None or loss < best[0]:
                best = (loss, booster[:rounds], BoosterShape(dict(shape), rounds, loss))
        assert best is not None
        boosters[product], shapes[product] = best[1], best[2]
    return boosters, shapes


def fit_boosters(
    data: Dataset, products: list[str], names: list[str], shapes: dict[str, BoosterShape] | None = None
) -> dict[str, xgb.Booster]:
    """One booster per product with enough positives, each in its chosen shape (the default without one)."""
    boosters = {}
    for j, product in enumerate(products):
        x, y = _rows(data, j)
        if not _trainable(y):
            continue
        shape = (shapes or {}).get(product, DEFAULT_SHAPE)
        matrix = xgb.DMatrix(x, label=y, feature_names=names)
        boosters[product] = xgb.train({**XGB_PARAMS, **shape.params}, matrix, num_boost_round=shape.rounds)
    return boosters
