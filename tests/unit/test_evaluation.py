"""Metrics with intervals (``recommenders.evaluation``): bootstrap intervals hold the mean and shrink with more
clients, a paired difference sees a consistent gain that two overlapping intervals would hide, NDCG@k by hand,
and AUC intervals only with both classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from recommenders.evaluation import (
    _auc_of_draws,
    _weight_blocks,
    auc_difference,
    auc_interval,
    mean_interval,
    ndcg_at_k,
    paired_difference,
)


def test_the_interval_holds_the_mean_and_narrows_with_more_clients() -> None:
    rng = np.random.default_rng(1)
    few, many = rng.random(50), rng.random(5000)
    small, large = mean_interval(few), mean_interval(many)
    assert small.low < small.mean < small.high and large.low < large.mean < large.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    assert large.low < 0.5 < large.high  # uniform values: the true mean is inside
    assert mean_interval([0.3] * 20).as_list() == [0.3, 0.3, 0.3]
    assert math.isnan(mean_interval([]).mean)


def test_a_consistent_paired_gain_is_seen_where_the_two_intervals_overlap() -> None:
    rng = np.random.default_rng(2)
    baseline = rng.random(200)
    model = baseline + 0.03  # every client a little better
    a, b = mean_interval(model), mean_interval(baseline)
    assert a.low < b.high  # the intervals overlap...
    gain = paired_difference(model, baseline)
    assert gain.mean == pytest.approx(0.03) and gain.low > 0  # ...but the paired gain is certain


def test_ndcg_by_hand() -> None:
    assert ndcg_at_k(["a", "b", "c"], {"a"}, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["b", "a", "c"], {"a"}, 3) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["b", "c", "a"], {"a"}, 2) == 0.0
    both = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "b"], {"a", "b"}, 3) == pytest.approx(both)
    assert ndcg_at_k(["a", "a"], {"a", "b"}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))  # no double count
    assert ndcg_at_k(["a"], set(), 3) == 0.0


def test_auc_interval_needs_both_classes() -> None:
    assert auc_interval(np.zeros(10), np.arange(10.0)) is None
    y = np.array([0, 0, 0, 1, 1] * 20)
    perfect = auc_interval(y, y + 0.1 * np.arange(100) / 100)
    assert perfect is not None and perfect.as_list() == [1.0, 1.0, 1.0]
    noise = auc_interval(y, np.random.default_rng(3).random(100))
    assert noise is not None and noise.low < 0.5 < noise.high


def test_the_paired_auc_difference_sees_a_better_model_and_not_a_copy() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.2).astype(float)
    good = y + rng.normal(0, 0.6, 400)
    weak = y + rng.normal(0, 2.0, 400)
    better = auc_difference(y, good, weak)
    assert better is not None and better.low > 0 and better.mean > 0.1
    same = auc_difference(y, weak, weak)
    assert same is not None and same.as_list() == [0.0, 0.0, 0.0]
    assert auc_difference(np.zeros(5), np.arange(5.0), np.arange(5.0)) is None


def test_rows_of_one_client_are_resampled_together() -> None:
    """A client counted at four cuts is one client: copying every row four times leaves the clustered interval
    as it was (the same clients), while resampling the copies one by one would halve its width."""
    values = np.random.default_rng(2).random(200)
    clients = [f"c{i}" for i in range(200)]
    once = mean_interval(values, groups=clients)
    four = mean_interval(np.repeat(values, 4), groups=list(np.repeat(clients, 4)))
    rows = mean_interval(np.repeat(values, 4))
    assert four.mean == pytest.approx(once.mean)
    assert four.high - four.low == pytest.approx(once.high - once.low, rel=0.15)
    assert rows.high - rows.low < 0.7 * (four.high - four.low)
    y = np.repeat((values > 0.7).astype(float), 4)
    clustered = auc_interval(
        y, np.repeat(values, 4) + 0.5 * np.random.default_rng(3).random(800), groups=list(np.repeat(clients, 4))
    )
    single = auc_interval(y, np.repeat(values, 4) + 0.5 * np.random.default_rng(3).random(800))
    assert clustered is not None and single is not None
    assert clustered.high - clustered.low > single.high - single.low


def test_groups_that_do_not_match_the_rows_are_refused() -> None:
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="3 groups for 4 rows"):
        auc_interval(y, np.arange(4.0), groups=["a", "b", "c"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.integers(0, 3)), min_size=2, max_size=40),
    st.lists(st.integers(0, 39), min_size=1, max_size=60),
)
def test_the_bootstrap_auc_is_sklearns_auc_on_the_drawn_rows(
    rows: list[tuple[bool, int, int]], draw: list[int]
) -> None:
    """The bootstrap computes every round's AUC from draw counts and one sort; on any draw (rows twice, tied
    scores, one class only) that must be ``roc_auc_score`` on the drawn rows themselves."""
    labels = np.array([r[0] for r in rows], dtype=float)
    scores = np.array([r[1] for r in rows], dtype=float)
    picked = np.array([i % len(rows) for i in draw])
    counts = np.bincount(picked, minlength=len(rows)).astype(float)[None, :]
    [weighted] = _auc_of_draws(labels, scores)(counts)
    drawn = labels[picked]
    if drawn.min() == drawn.max():
        assert math.isnan(weighted)
    else:
        assert weighted == pytest.approx(roc_auc_score(drawn, scores[picked]))


def test_clients_are_drawn_whole_in_the_auc_bootstrap() -> None:
    """With ``groups``, the rows of one client are drawn the same number of times in every round."""
    groups = ["a", "b", "a", "c", "b", "a"]
    for block in _weight_blocks(6, 100, 0, groups):
        assert (block[:, 0] == block[:, 2]).all() and (block[:, 0] == block[:, 5]).all()
        assert (block[:, 1] == block[:, 4]).all()
        assert (block[:, [0, 1, 3]].sum(axis=1) == 3).all()  # three clients drawn per round


def test_the_auc_refuses_scores_it_cannot_rank_and_takes_the_greater_label_as_positive() -> None:
    with pytest.raises(ValueError, match="finite"):
        auc_interval(np.array([0.0, 1.0, 1.0]), np.array([math.nan, 0.2, 0.3]))
    with pytest.raises(ValueError, match="2 scores for 3 labels"):
        auc_difference(np.array([0.0, 1.0, 1.0]), np.arange(3.0), np.arange(2.0))
    labels = np.array([1, 2, 2, 1, 2])
    scores = np.array([0.1, 0.7, 0.4, 0.5, 0.9])
    interval = auc_interval(labels, scores)
    assert interval is not None and interval.mean == pytest.approx(roc_auc_score(labels, scores))


def test_an_auc_whose_draws_all_hold_one_class_has_no_bounds_rather_than_a_crash() -> None:
    """Two rows and one round: the round draws one class (seed 0), so there is no estimate to take bounds of."""
    interval = auc_interval(np.array([0.0, 1.0]), np.array([0.1, 0.2]), rounds=1, seed=0)
    assert interval is not None and interval.mean == 1.0
    assert math.isnan(interval.low) and math.isnan(interval.high)
