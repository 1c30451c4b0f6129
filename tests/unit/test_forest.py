"""The numpy forest (``recommenders.forest``) against XGBoost itself: for boosters of several depths and tree
counts, rows with missing values, infinities and values exactly on split thresholds, every product's
probability equals ``Booster.predict`` and every contribution equals ``predict(approx_contribs=True)``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recommenders.forest import Forest

FEATURES = 6


def _train(depth: int, rounds: int, seed: int, **params: object) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan  # gaps teach the trees a default direction
    y = ((np.nan_to_num(x[:, seed % FEATURES]) + 0.3 * rng.normal(size=400)) > 0.2).astype(np.float32)
    base = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.3, "nthread": 1, "seed": seed}
    return xgb.train({**base, **params}, xgb.DMatrix(x, label=y), num_boost_round=rounds)


@pytest.fixture(scope="module")
def boosters() -> dict[str, xgb.Booster]:
    """Products with different depths and tree counts; one whose later trees stop at the root (a leaf)."""
    return {
        "shallow": _train(depth=1, rounds=3, seed=1),
        "deep": _train(depth=6, rounds=12, seed=2),
        "usual": _train(depth=4, rounds=20, seed=3),
        "stumps": _train(depth=3, rounds=5, seed=4, min_child_weight=150),
    }


@pytest.fixture(scope="module")
def forest(boosters: dict[str, xgb.Booster]) -> Forest:
    return Forest.from_boosters(boosters)


def _thresholds(booster: xgb.Booster) -> list[float]:
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    return [c for t in trees for c, left in zip(t["split_conditions"], t["left_children"], strict=True) if left != -1]


def _rows(boosters: dict[str, xgb.Booster]) -> np.ndarray:
    rng = np.random.default_rng(11)
    rows = rng.normal(size=(200, FEATURES)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.3] = np.nan
    rows[0] = np.nan  # nothing known
    rows[1] = np.inf
    rows[2] = -np.inf
    # values exactly on split thresholds: "x < threshold" goes left, equal goes right
    on_split = np.array([c for b in boosters.values() for c in _thresholds(b)], dtype=np.float32)
    rows[3:40] = rng.choice(on_split, size=(37, FEATURES))
    return rows


def _assert_same_as_xgboost(forest: Forest, boosters: dict[str, xgb.Booster], rows: np.ndarray) -> None:
    walk = forest.score(rows)
    # XGBoost refuses infinities; the forest reads them as the largest float32, so compare with that
    largest = np.finfo(np.float32).max
    matrix = xgb.DMatrix(np.clip(rows, -largest, largest), missing=np.nan)
    for product, booster in boosters.items():
        expected = booster.predict(matrix)
        np.testing.assert_allclose(walk.probabilities[:, forest.index[product]], expected, atol=1e-6)
        contributions = booster.predict(matrix, pred_contribs=True, approx_contribs=True)[:, :-1]
        ours = forest.contributions(walk, range(len(rows)), product, rows.shape[1])
        np.testing.assert_allclose(ours, contributions, atol=1e-5)


def test_probabilities_and_contributions_equal_xgboosts(forest: Forest, boosters: dict[str, xgb.Booster]) -> None:
    assert forest.depth == 6 and len(forest.products) == 4
    _assert_same_as_xgboost(forest, boosters, _rows(boosters))


def test_a_subset_of_rows_gets_the_same_contributions(forest: Forest, boosters: dict[str, xgb.Booster]) -> None:
    rows = _rows(boosters)
    walk = forest.score(rows)
    every = forest.contributions(walk, range(len(rows)), "deep", FEATURES)
    some = forest.contributions(walk, [7, 3, 150], "deep", FEATURES)
    np.testing.assert_array_equal(some, every[[7, 3, 150]])


def test_one_row_scores_as_in_a_batch(forest: Forest, boosters: dict[str, xgb.Booster]) -> None:
    rows = _rows(boosters)
    batch = forest.score(rows).probabilities
    for i in (0, 1, 5, 99):
        np.testing.assert_allclose(forest.score(rows[i : i + 1]).probabilities[0], batch[i], atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 12), st.just(FEATURES)),
        elements=st.one_of(st.floats(-5, 5, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30])),
    )
)
def test_any_rows_score_as_xgboost_does(forest: Forest, boosters: dict[str, xgb.Booster], rows: np.ndarray) -> None:
    _assert_same_as_xgboost(forest, boosters, rows)


def test_only_logistic_boosters_are_compiled() -> None:
    with pytest.raises(ValueError, match="binary:logistic"):
        Forest.from_boosters({"x": _train(depth=2, rounds=2, seed=5, objective="reg:squarederror")})


def test_no_boosters_score_no_products() -> None:
    walk = Forest.from_boosters({}).score(np.zeros((3, FEATURES), dtype=np.float32))
    assert walk.probabilities.shape == (3, 0)
