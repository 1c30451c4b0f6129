"""Per-product booster shapes chosen on a validation cut (``recommenders.boosting``): a product with signal
gets the shape and tree count with the lowest validation loss, and the refit on all training rows has exactly
that many trees; a product with too few positives gets no booster; one with no validation positive keeps the
default shape."""

from __future__ import annotations

import numpy as np
import pytest

from recommenders.boosting import DEFAULT_SHAPE, SHAPES, choose_shapes, fit_boosters
from recommenders.dataset import Dataset
from recommenders.profile import ClientSnapshot

NAMES = ["signal", "noise"]
PRODUCTS = ["strong", "rare", "unseen"]


def dataset(seed: int, rows: int, validation: bool = False) -> Dataset:
    """``strong`` is taken up when the signal is high; ``rare`` twice in all; ``unseen`` never on the
    validation rows."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 2)).astype(np.float32)
    labels = np.zeros((rows, 3), dtype=np.float32)
    labels[:, 0] = (features[:, 0] + rng.normal(0, 0.7, rows) > 1.3).astype(np.float32)
    labels[:2, 1] = 1.0
    labels[:, 2] = 0.0 if validation else (rng.random(rows) < 0.1)
    snapshots = [ClientSnapshot(f"c{i}", 0.0, {}, "retail", 40.0, 400.0, set(), set()) for i in range(rows)]
    return Dataset(
        features, labels, np.ones((rows, 3), np.float32), np.zeros(rows), [s.client_id for s in snapshots], snapshots
    )


def test_shapes_are_chosen_on_validation_and_refitted_with_their_tree_count() -> None:
    fit_set, validation = dataset(1, 1500), dataset(2, 800, validation=True)
    boosters, shapes = choose_shapes(fit_set, validation, PRODUCTS, NAMES)
    assert set(boosters) == set(shapes) == {"strong", "unseen"}  # "rare" has 2 positives: no booster
    strong = shapes["strong"]
    assert strong.params in [dict(s) for s in SHAPES] and strong.validation_logloss is not None
    assert 1 <= strong.rounds <= 300 and boosters["strong"].num_boosted_rounds() == strong.rounds
    assert shapes["unseen"] == DEFAULT_SHAPE  # nothing to validate on
    refit = fit_boosters(dataset(3, 2000), PRODUCTS, NAMES, shapes)
    assert refit["strong"].num_boosted_rounds() == strong.rounds
    assert refit["unseen"].num_boosted_rounds() == DEFAULT_SHAPE.rounds
    assert "rare" not in refit


def test_the_chosen_shape_has_the_lowest_validation_loss_of_all_shapes() -> None:
    import xgboost as xgb

    from recommenders.boosting import XGB_PARAMS

    fit_set, validation = dataset(4, 1500), dataset(5, 800, validation=True)
    _, shapes = choose_shapes(fit_set, validation, ["strong"], NAMES)
    train = xgb.DMatrix(fit_set.features, label=fit_set.labels[:, 0], feature_names=NAMES)
    valid = xgb.DMatrix(validation.features, label=validation.labels[:, 0], feature_names=NAMES)
    losses = []
    for shape in SHAPES:
        booster = xgb.train(
            {**XGB_PARAMS, **shape}, train, 300, evals=[(valid, "v")], early_stopping_rounds=30, verbose_eval=False
        )
        losses.append(booster.best_score)
    assert shapes["strong"].validation_logloss == pytest.approx(min(losses))
