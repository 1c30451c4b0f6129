"""The time split of training (``training.cut_times`` and ``training._split``): the holdout cut is a horizon
before the end, no training cut's label window reaches past the holdout cut, training cuts are ``step_days``
apart, and the validation split applies the same rule inside the training cuts. Also the served models'
base rates per segment (``LoadedModels.base_rates``)."""

from __future__ import annotations

import numpy as np
import pytest

from recommenders.dataset import DAY, Dataset
from recommenders.expert import ExpertScorer
from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.registry import LoadedModels
from recommenders.training import TrainingConfig, _split, cut_times, holdout_times

END = 1.8e9


def test_training_cuts_end_their_labels_by_the_holdout_cut() -> None:
    config = TrainingConfig(end=END, horizon_days=30, step_days=7, cuts=12)
    cuts = cut_times(config)
    assert len(cuts) == 12 and cuts == sorted(cuts)
    holdout = max(cuts)
    assert holdout == END - 30 * DAY
    training = cuts[:-1]
    assert max(training) + 30 * DAY == holdout  # the latest one's window ends exactly at the holdout cut
    assert np.allclose(np.diff(training), 7 * DAY)


def test_several_holdout_cuts_are_a_step_apart_and_training_ends_a_horizon_before_the_first() -> None:
    config = TrainingConfig(end=END, horizon_days=30, step_days=7, cuts=15, holdout_cuts=4)
    cuts = cut_times(config)
    holdouts = holdout_times(config)
    assert len(cuts) == 15 and holdouts == cuts[-4:]
    assert max(holdouts) == END - 30 * DAY and np.allclose(np.diff(holdouts), 7 * DAY)
    assert cuts[-5] + 30 * DAY == min(holdouts)  # no training label window reaches the first holdout cut
    train, holdout = _split(rows(cuts), min(holdouts), 30)
    assert sorted(set(holdout.cut)) == holdouts and len(train.cut) == 11


def rows(cuts: list[float]) -> Dataset:
    snapshots = [ClientSnapshot(f"c{i}", c, {}, "retail", 40.0, 400.0, set(), set()) for i, c in enumerate(cuts)]
    n = len(cuts)
    return Dataset(
        np.zeros((n, 1)), np.zeros((n, 1)), np.ones((n, 1)), np.array(cuts), [s.client_id for s in snapshots], snapshots
    )


def test_split_keeps_rows_whose_labels_end_by_the_cut_and_the_rows_at_it() -> None:
    cuts = cut_times(TrainingConfig(end=END, horizon_days=30, step_days=7, cuts=12))
    data = rows(cuts * 2)
    train, holdout = _split(data, max(cuts), 30)
    assert set(holdout.cut) == {max(cuts)} and len(holdout.cut) == 2
    assert len(train.cut) == 22 and (train.cut + 30 * DAY <= max(cuts) + 1).all()
    fit, validation = _split(train, float(train.cut.max()), 30)
    assert set(validation.cut) == {train.cut.max()}
    assert (fit.cut + 30 * DAY <= train.cut.max() + 1).all() and len(fit.cut) == 2 * 6  # 4 weekly cuts are too close
    with pytest.raises(ValueError, match="not enough history"):
        _split(rows([END, END]), END, 30)


def test_base_rates_are_the_segments_or_else_everyones() -> None:
    space = FeatureSpace.from_view(["sum(tx.out.amount, 30d)"])
    models = LoadedModels(
        "v1",
        None,
        None,
        ExpertScorer.__new__(ExpertScorer),
        {"a": 0.1},
        segment_popularity={"sme": {"a": 0.5}},
        blend_weights={"xgboost": 1.0},
    )
    assert models.base_rates("sme") == {"a": 0.5}
    assert models.base_rates("retail") == {"a": 0.1} and models.base_rates(None) == {"a": 0.1}
    assert space.names  # the view parses


def test_a_config_without_a_training_cut_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one training cut"):
        TrainingConfig(cuts=4, holdout_cuts=4)
    with pytest.raises(ValueError, match="at least one training cut"):
        TrainingConfig(holdout_cuts=0)
