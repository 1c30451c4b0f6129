"""The expert scores any stored value: one past every real client's (a writer may store ``birth_date`` =
1e300 through the API) overflowed ``math.exp`` and failed the expert for that client on every request."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.settings import load_settings
from recommenders.catalogue import load_catalogue
from recommenders.expert import ExpertScorer
from recommenders.profile import model_space
from tests.conftest import ROOT


@pytest.mark.parametrize("value", [-1e300, 1e300])
def test_one_absurd_stored_value_gives_finite_scores(value: float) -> None:
    catalogue = load_catalogue(ROOT / "deploy" / "products.toml")
    settings = load_settings()
    space = model_space(settings.views[settings.recommendations.view], catalogue)
    n = len(space.names)
    # statistics of a trained version: a feature with a small spread turns a far value into a huge score
    expert = ExpertScorer("v1", space, catalogue, np.zeros(n, np.float32), np.full(n, 0.05, np.float32))
    for i in range(len(space.names)):
        row = np.zeros(len(space.names))
        row[i] = value
        scores = expert.score_row(row, catalogue.ids)
        assert all(0.0 <= s.score <= 1.0 for s in scores.values()), space.names[i]
