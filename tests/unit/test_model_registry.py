"""Hot reload of model versions (``recommenders.registry``): a version whose meta.json carries malformed blend
weights, base rates or popularity is refused with the serving version kept (the reload loop goes on), and a
well-formed one is served with its learned weights and segment base rates; a version without learned weights
(trained before they existed) loads with None, so the catalogue's weights apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommenders.catalogue import load_catalogue
from recommenders.profile import FeatureSpace
from recommenders.registry import NO_MODEL, ModelRegistry
from tests.conftest import ROOT

SPACE = FeatureSpace.from_view(["sum(tx.out.amount, 30d)"])


def write_version(models: Path, name: str, **meta: Any) -> None:
    directory = models / name
    directory.mkdir(parents=True)
    n = len(SPACE.names)
    np.savez(directory / "expert_stats.npz", mean=np.zeros(n, np.float32), std=np.ones(n, np.float32))
    (directory / "meta.json").write_text(json.dumps({"features": SPACE.names, **meta}))
    (models / "LATEST").write_text(name)


GOOD = {
    "popularity": {"deposit": 0.1},
    "segment_popularity": {"sme": {"deposit": 0.4}},
    "blend": {"weights": {"xgboost": 0.5, "als": 0.0, "expert": 0.2, "base_rate": 0.3}},
}


@pytest.mark.parametrize(
    "broken",
    [
        {"blend": {"weights": "all on xgboost"}},
        {"blend": {"weights": {"xgboost": -1}}},
        {"blend": {"weights": {"xgboost": True}}},
        {"blend": []},
        {"segment_popularity": {"sme": 0.4}},
        {"segment_popularity": {"sme": {"deposit": "high"}}},
        {"popularity": ["deposit"]},
    ],
)
def test_a_malformed_version_is_refused_and_the_served_one_kept(tmp_path: Path, broken: dict[str, Any]) -> None:
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    write_version(tmp_path, "v1", **{**GOOD, **broken})
    assert registry.reload_if_changed() is False
    assert registry.current.version == NO_MODEL


def test_a_good_version_is_served_with_its_weights_and_base_rates(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    write_version(tmp_path, "v1", **GOOD)
    assert registry.reload_if_changed() is True
    models = registry.current
    assert models.version == "v1" and models.blend_weights == GOOD["blend"]["weights"]
    assert models.base_rates("sme") == {"deposit": 0.4} and models.base_rates("retail") == {"deposit": 0.1}
    write_version(tmp_path, "v0-old", popularity={"deposit": 0.2})  # no learned weights: the catalogue's apply
    assert registry.reload_if_changed() is True
    assert registry.current.blend_weights is None and registry.current.segment_popularity == {}
