"""The holdout metrics of ``recommenders.training``: ``average_precision_at_k`` on hand-computed rankings and
under properties (within [0, 1]; blind to the order of irrelevant items and of everything below the top k;
1.0 exactly for a perfect top; never lowered by moving a relevant item up); ``evaluate``'s MAP@k of the
blended, XGBoost and popularity rankings and its per-product AUC on a tiny hand-built holdout (masked products
are neither ranked nor counted, clients with nothing to find are skipped); ``population_stats`` ignores
missing values."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st

from recommenders.catalogue import Catalogue, Eligibility, Product
from recommenders.dataset import Dataset
from recommenders.expert import ExpertScorer
from recommenders.holdout import average_precision_at_k, evaluate
from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.training import population_stats
from recommenders.xgb import XGBoostScorer

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True)


# ---- average precision at k: hand-computed ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ranked", "relevant", "k", "expected"),
    [
        (["a", "b", "c"], {"a", "b"}, 3, 1.0),  # perfect ranking
        (["a", "b", "c"], {"a", "b", "c"}, 3, 1.0),
        (["x", "a", "y"], {"a"}, 3, 0.5),  # the one relevant item at rank 2
        (["x", "y", "a"], {"a"}, 3, 1 / 3),
        (["a", "x", "b"], {"a", "b"}, 3, (1 / 1 + 2 / 3) / 2),
        (["x", "a", "b"], {"a", "b"}, 3, (1 / 2 + 2 / 3) / 2),
        (["x", "y", "z"], {"a"}, 3, 0.0),  # nothing relevant was ranked
        (["a", "x", "y"], {"a", "z"}, 3, 0.5),  # a relevant item the ranking missed counts against it
        (["x", "y", "z", "a"], {"a"}, 3, 0.0),  # k truncation: rank 4 is not seen at k = 3
        (["x", "y", "z", "a"], {"a"}, 4, 0.25),
        (["a", "b", "c", "d"], {"a", "b", "c", "d"}, 3, 1.0),  # at most k can be found: the divisor is min(|R|, k)
        (["a", "x", "b", "c"], {"a", "b", "c"}, 2, 0.5),
        ([], {"a"}, 3, 0.0),
    ],
)
def test_average_precision_at_k_by_hand(ranked: list[str], relevant: set[str], k: int, expected: float) -> None:
    assert average_precision_at_k(ranked, relevant, k) == pytest.approx(expected)


def test_no_relevant_items_scores_zero() -> None:
    """Nothing to find is scored 0.0 rather than dividing by zero (``evaluate`` skips such clients anyway)."""
    assert average_precision_at_k(["a", "b"], set(), 3) == 0.0
    assert average_precision_at_k([], set(), 3) == 0.0


# ---- average precision at k: properties ---------------------------------------------------------------------
POOL = [f"p{i}" for i in range(12)]
Case = tuple[list[str], set[str], int]  # a ranking of distinct products, the relevant products, k


@st.composite
def rankings(draw: st.DrawFn) -> Case:
    """A ranking of distinct products, the relevant ones (some possibly unranked) and k."""
    ranked = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)))
    relevant = set(draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL))))
    k = draw(st.integers(min_value=1, max_value=len(POOL) + 2))
    return ranked, relevant, k


@PROPERTY
@given(rankings())
def test_average_precision_is_within_zero_and_one(case: Case) -> None:
    ranked, relevant, k = case
    assert 0.0 <= average_precision_at_k(ranked, relevant, k) <= 1.0


@PROPERTY
@given(rankings(), st.randoms(use_true_random=False))
def test_the_order_below_the_top_k_does_not_matter(case: Case, rng: random.Random) -> None:
    ranked, relevant, k = case
    tail = ranked[k:]
    rng.shuffle(tail)
    assert average_precision_at_k([*ranked[:k], *tail], relevant, k) == average_precision_at_k(ranked, relevant, k)


@PROPERTY
@given(rankings(), st.randoms(use_true_random=False))
def test_the_order_of_irrelevant_items_does_not_matter(case: Case, rng: random.Random) -> None:
    ranked, relevant, k = case
    irrelevant = [p for p in ranked if p not in relevant]
    rng.shuffle(irrelevant)
    others = iter(irrelevant)
    reordered = [p if p in relevant else next(others) for p in ranked]
    assert average_precision_at_k(reordered, relevant, k) == average_precision_at_k(ranked, relevant, k)


@PROPERTY
@given(rankings())
def test_one_exactly_when_the_top_is_all_relevant(case: Case) -> None:
    ranked, relevant, k = case
    perfect = bool(relevant) and all(p in relevant for p in ranked[: min(len(relevant), k)])
    perfect = perfect and len(ranked) >= min(len(relevant), k)
    assert math.isclose(average_precision_at_k(ranked, relevant, k), 1.0) == perfect


@PROPERTY
@given(rankings(), st.data())
def test_moving_a_relevant_item_up_never_lowers_the_score(case: Case, data: st.DataObject) -> None:
    ranked, relevant, k = case
    swaps = [i for i in range(1, len(ranked)) if ranked[i] in relevant and ranked[i - 1] not in relevant]
    if not swaps:
        return
    i = data.draw(st.sampled_from(swaps))
    better = [*ranked[: i - 1], ranked[i], ranked[i - 1], *ranked[i + 1 :]]
    assert average_precision_at_k(better, relevant, k) >= average_precision_at_k(ranked, relevant, k) - 1e-12


# ---- evaluate: MAP@k and per-product AUC on a hand-built holdout --------------------------------------------
PRODUCTS = ["a", "b", "c"]
POPULARITY = {"a": 0.1, "b": 0.3, "c": 0.5}  # popularity ranks c, b, a


@pytest.fixture(scope="module")
def space() -> FeatureSpace:
    return FeatureSpace.from_view(["sum(tx.out.amount, 30d)"])


@pytest.fixture(scope="module")
def xgb_scorer(space: FeatureSpace) -> XGBoostScorer:
    """A model for product ``a`` only, sure of itself: probability near 1 when the first feature is positive,
    near 0 otherwise. ``b`` and ``c`` have no model."""
    f0 = np.array([-6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6] * 4, dtype=np.float32)
    features = np.full((len(f0), len(space.names)), np.nan, dtype=np.float32)
    features[:, 0] = f0
    matrix = xgb.DMatrix(features, label=(f0 > 0).astype(np.float32), feature_names=space.names)
    params = {"objective": "binary:logistic", "max_depth": 1, "eta": 1.0, "nthread": 1, "seed": 1}
    return XGBoostScorer("eval", space, {"a": xgb.train(params, matrix, num_boost_round=10)})


def holdout(space: FeatureSpace, f0: list[float], mask: list[list[int]], labels: list[list[int]]) -> Dataset:
    features = np.full((len(f0), len(space.names)), np.nan, dtype=np.float32)
    features[:, 0] = f0
    snapshots = [ClientSnapshot(f"c{i}", 1.79e9, {}, "retail", 40.0, 400.0, set(), set()) for i in range(len(f0))]
    return Dataset(
        features,
        np.array(labels, dtype=np.float32),
        np.array(mask, dtype=np.float32),
        np.zeros(len(f0)),
        [s.client_id for s in snapshots],
        snapshots,
    )


def run_evaluate(data: Dataset, space: FeatureSpace, xgb_scorer: XGBoostScorer, k: int = 2) -> dict[str, Any]:
    # portraits are empty: the expert scores nothing, so the blend is XGBoost with popularity for the rest
    catalogue = Catalogue(products=[Product(id=p, title=p.upper(), eligibility=Eligibility()) for p in PRODUCTS])
    expert = ExpertScorer("eval", space, catalogue, prior=POPULARITY)
    weights = {"xgboost": 0.8, "als": 0.1, "expert": 0.1}
    return evaluate(data, PRODUCTS, xgb_scorer, None, expert, POPULARITY, weights, k)


def test_evaluate_computes_map_at_k_of_each_ranking_over_clients_with_something_to_find(
    space: FeatureSpace, xgb_scorer: XGBoostScorer
) -> None:
    data = holdout(
        space,
        f0=[-5, -5, -4, 5, 4],
        mask=[[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]],  # clients 1 and 4 already hold a
        labels=[[0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]],  # 2 takes nothing; 4's a is masked
    )
    metrics = run_evaluate(data, space, xgb_scorer, k=2)

    # popularity c,b,a: client 0 finds c at 1 (1.0), client 1 ranks c,b and finds b at 2 (0.5), client 3's a is
    # at 3 > k (0.0)
    assert metrics["map_at_2_popularity"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # XGBoost: the modelled a first, then b, c unmodelled in catalogue order: 0.0, 1.0, 1.0
    assert metrics["map_at_2_xgboost"] == pytest.approx((0.0 + 1.0 + 1.0) / 3)
    # the blend: a's probability (near 0 or 1) against the others' base rates: c,b,a / c,b / a,c,b
    assert metrics["map_at_2"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    assert metrics["evaluated_clients"] == 3

    per_product = metrics["per_product"]
    # a: rows where it could be recommended (0, 2, 3), one positive; the masked positive of client 4 is not counted
    assert per_product["a"]["rows"] == 3 and per_product["a"]["positives"] == 1
    assert per_product["a"]["auc"] == pytest.approx(1.0) and per_product["a"]["pr_auc"] == pytest.approx(1.0)
    assert per_product["a"]["pr_auc_base_rate"] == pytest.approx(1 / 3)
    assert per_product["b"] == {"positives": 1, "rows": 5}  # no model: no AUC
    assert per_product["c"] == {"positives": 1, "rows": 5}


def test_evaluate_gives_no_auc_for_a_product_with_one_class_and_no_map_without_relevant_clients(
    space: FeatureSpace, xgb_scorer: XGBoostScorer
) -> None:
    data = holdout(space, f0=[-5, 5], mask=[[1, 1, 1], [1, 1, 1]], labels=[[0, 0, 0], [0, 0, 0]])
    metrics = run_evaluate(data, space, xgb_scorer, k=3)
    assert metrics["map_at_3"] is None and metrics["map_at_3_xgboost"] is None
    assert metrics["map_at_3_popularity"] is None and metrics["evaluated_clients"] == 0
    assert metrics["per_product"]["a"] == {"positives": 0, "rows": 2}


# ---- population statistics ----------------------------------------------------------------------------------
def test_population_stats_ignore_missing_values() -> None:
    nan = np.nan
    squashed = np.array([[1.0, nan, 4.0, nan], [3.0, nan, nan, nan], [nan, nan, nan, 2.0], [2.0, nan, nan, nan]])
    mean, spread = population_stats(squashed)
    assert mean.dtype == np.float32 and spread.dtype == np.float32
    assert mean.tolist() == pytest.approx([2.0, 0.0, 4.0, 2.0])
    # column 0: population spread of 1, 3, 2; a column with fewer than two values spreads 1 (not 0 or NaN)
    assert spread.tolist() == pytest.approx([math.sqrt(2 / 3), 1.0, 1.0, 1.0])
    assert not np.isnan(mean).any() and not np.isnan(spread).any()


def five_clients(space: FeatureSpace) -> tuple[Dataset, ExpertScorer, dict[str, float]]:
    """Five holdout clients (1 and 4 hold a, 2 takes nothing), an expert with empty portraits, and weights."""
    data = holdout(
        space,
        f0=[-5, -5, -4, 5, 4],
        mask=[[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]],
        labels=[[0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]],
    )
    catalogue = Catalogue(products=[Product(id=p, title=p.upper(), eligibility=Eligibility()) for p in PRODUCTS])
    expert = ExpertScorer("eval", space, catalogue, prior=POPULARITY)
    return data, expert, {"xgboost": 0.8, "als": 0.1, "expert": 0.1}


def test_evaluate_reports_every_ranking_with_intervals_and_the_blends_paired_gains(
    space: FeatureSpace, xgb_scorer: XGBoostScorer
) -> None:
    data, expert, weights = five_clients(space)
    by_segment = {"retail": {"a": 0.9, "b": 0.1, "c": 0.0}}  # retail clients take a: ranks a, b, c
    logistic = {"a": np.array([0.1, 0.1, 0.1, 0.9, 0.9]), "b": np.full(5, 0.5), "c": np.full(5, 0.2)}
    metrics = evaluate(
        data, PRODUCTS, xgb_scorer, None, expert, POPULARITY, weights, 2,
        segment_popularity=by_segment, logistic=logistic,
    )  # fmt: skip

    rankings = metrics["rankings"]
    assert set(rankings) == {"blend", "xgboost", "popularity", "expert", "segment_popularity", "logistic_regression"}
    assert rankings["popularity"]["map_at_2"][0] == pytest.approx(metrics["map_at_2_popularity"], abs=1e-4)
    assert rankings["blend"]["map_at_2"][0] == pytest.approx(metrics["map_at_2"], abs=1e-4)
    # segment popularity a,b,c: client 0 finds c nowhere in 2 (0), client 1 ranks b,c: b at 1 (1), client 3: a (1)
    assert rankings["segment_popularity"]["map_at_2"][0] == pytest.approx(2 / 3, abs=1e-4)
    # logistic: client 0 ranks b,c (c at 2: 0.5), client 1 b,c (1), client 3 a (1)
    assert rankings["logistic_regression"]["map_at_2"][0] == pytest.approx(2.5 / 3, abs=1e-4)
    for values in rankings.values():
        for mean, low, high in values.values():
            assert low <= mean <= high
    assert set(metrics["blend_minus"]) == set(rankings) - {"blend"}
    gain = metrics["blend_minus"]["popularity"]
    assert gain[0] == pytest.approx(metrics["map_at_2"] - metrics["map_at_2_popularity"], abs=1e-4)
    # what each source adds: the sources with weight (no ALS here), each a paired interval
    assert set(metrics["source_gain"]) == {"xgboost", "expert"}
    assert all(low <= mean <= high for mean, low, high in metrics["source_gain"].values())
    with_base = evaluate(
        data, PRODUCTS, xgb_scorer, None, expert, POPULARITY, {**weights, "base_rate": 0.5}, 2,
        segment_popularity=by_segment,
    )  # fmt: skip
    assert set(with_base["source_gain"]) == {"xgboost", "expert", "base_rate"}
    # the shown order (blend x business value): equal values change nothing, a dominant value puts a first
    same = evaluate(
        data, PRODUCTS, xgb_scorer, None, expert, POPULARITY, weights, 2, values=dict.fromkeys(PRODUCTS, 2.0)
    )
    assert same["rankings"]["blend_with_value"] == same["rankings"]["blend"]
    valued = evaluate(data, PRODUCTS, xgb_scorer, None, expert, POPULARITY, weights, 2, values={"a": 100.0, "b": 1.0})
    # a first where allowed: client 0 (wants c) a,c -> 0.5; client 1 (a masked, wants b) c,b -> 0.5; client 3 (a) 1
    assert valued["rankings"]["blend_with_value"]["map_at_2"][0] == pytest.approx(2 / 3, abs=1e-4)
    a = metrics["per_product"]["a"]
    assert a["too_few_positives"] is True and a["auc_interval"] == [1.0, 1.0, 1.0]
    assert a["auc_logistic_interval"][0] == pytest.approx(1.0)


def test_evaluate_ranks_reference_chances_beside_the_models(space: FeatureSpace, xgb_scorer: XGBoostScorer) -> None:
    """A simulated bank's own chances are one more ranking, with its interval and the blend's paired gain."""
    data, expert, weights = five_clients(space)
    knowing = data.labels + 0.01  # the chances put what each client takes first
    backwards = 1.0 - data.labels  # ... and last
    metrics = evaluate(
        data, PRODUCTS, xgb_scorer, None, expert, POPULARITY, weights, 2,
        references={"knowing": knowing, "backwards": backwards},
    )  # fmt: skip
    assert metrics["rankings"]["knowing"]["map_at_2"] == [1.0, 1.0, 1.0]
    # backwards: client 0 ranks a,b (c missed), client 1 c only before b (b at 2: 0.5), client 3 b,c (a missed)
    assert metrics["rankings"]["backwards"]["map_at_2"][0] == pytest.approx(0.5 / 3, abs=1e-4)
    assert metrics["blend_minus"]["knowing"][0] == pytest.approx(metrics["map_at_2"] - 1.0, abs=1e-4)
    # per product, how well each reference ranks the takers (a: rows 0, 2, 3 with client 3 the one taker)
    a = metrics["per_product"]["a"]
    assert a["auc_knowing"] == 1.0 and a["auc_backwards"] == 0.0
