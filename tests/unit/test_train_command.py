"""`rtrec train` shares the machine and the store with serving: it lowers its own CPU priority and reads one
client at a time, from where `recommendations.training_*` say (figures in docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest

from deploy import cli
from deploy.settings import load_settings
from feature_store.config import TtlSettings
from feature_store.ttl import TtlPolicy
from recommenders import training
from recommenders.catalogue import load_catalogue
from recommenders.config import RecommendationSettings
from recommenders.profile import model_space


def test_rtrec_train_reads_gently_at_a_low_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, Any] = {}
    monkeypatch.setattr(cli.os, "nice", lambda increment: asked.setdefault("niceness", increment))

    async def fake_train(settings: Any, config: training.TrainingConfig, read_from: str | None = None) -> Any:
        asked.update(read_from=read_from, concurrency=config.read_concurrency)
        return {"version": "v1", "training": {}, "metrics": {"per_product": {}}}

    monkeypatch.setattr(training, "train_configured", fake_train)
    settings = load_settings()
    args = argparse.Namespace(horizon_days=30.0, step_days=7.0, cuts=12, holdout_cuts=1, k=3, end=None)
    assert cli.cmd_train(settings, args) == 0
    rec = settings.recommendations
    assert asked == {"niceness": 19, "read_from": "master", "concurrency": 1}
    assert (rec.training_niceness, rec.training_read_from, rec.training_read_concurrency) == (19, "master", 1)
    assert training.TrainingConfig().read_concurrency == 16  # evaluation and the demo: nothing else is served


@pytest.mark.parametrize(
    "bad", [{"training_read_concurrency": 0}, {"training_niceness": -1}, {"training_niceness": 20}]
)
def test_settings_that_would_hang_or_fail_training_are_refused_at_load(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="training_"):
        RecommendationSettings(**bad)  # type: ignore[arg-type]


def test_the_default_ttl_keeps_every_window_whole_at_the_earliest_training_cut() -> None:
    """At 400 days a 365-day window at a cut 130 days back lost its oldest 95 days in training (not in serving):
    a skew between the two on every yearly feature, once the history is older than the TTL."""
    settings = load_settings()
    rec = settings.recommendations
    space = model_space(settings.views[rec.view], load_catalogue(rec.catalogue))
    config = training.TrainingConfig(end=1_790_000_000.0)
    assert training.windows_cut_short(space, config, TtlPolicy.from_settings(settings.ttl)) == []
    short = TtlPolicy.from_settings(TtlSettings(default_days=400, sources={"transactions": 400}))
    assert "sum(tx.out.amount,365d)" in training.windows_cut_short(space, config, short)
    # the demo's bank of 200 days holds nothing the TTL took: no warning for it
    young = training.TrainingConfig(
        end=1_790_000_000.0, cuts=15, holdout_cuts=4, history_start=1_790_000_000.0 - 200 * 86400
    )
    assert training.windows_cut_short(space, young, short) == []
    assert training.windows_cut_short(space, dataclasses.replace(young, history_start=None), short)
