"""Hot reload of model versions (``recommenders.registry``): a version whose meta.json carries malformed blend
weights, base rates or popularity is refused with the serving version kept (the reload loop goes on), and a
well-formed one is served with its learned weights and segment base rates; a version without learned weights
(trained before they existed) loads with None, so the catalogue's weights apply."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommenders.catalogue import load_catalogue
from recommenders.profile import FeatureSpace
from recommenders.registry import NO_MODEL, ModelRegistry, file_digests
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


def test_a_truncated_artifact_is_refused_once_and_a_later_good_version_served(tmp_path: Path) -> None:
    """A half-copied ``.npz`` raises BadZipFile, which the reload loop did not catch: it died, and no model or
    catalogue was reloaded again until a restart."""
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    write_version(tmp_path, "v1", **GOOD)
    stats = tmp_path / "v1" / "expert_stats.npz"
    stats.write_bytes(stats.read_bytes()[:60])
    assert registry.reload_if_changed() is False and registry.current.version == NO_MODEL
    assert registry.refused == "v1" and registry.reload_if_changed() is False  # not retried every round
    write_version(tmp_path, "v2", **GOOD)
    assert registry.reload_if_changed() is True and registry.current.version == "v2"


def test_a_version_missing_a_trained_booster_is_refused(tmp_path: Path) -> None:
    """``meta.json`` lists the boosters training wrote: serving a partly copied version would put some products on
    base rates under the full version's name."""
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    write_version(tmp_path, "v1", **GOOD, xgboost_products=["deposit"])
    assert registry.reload_if_changed() is False and registry.refused == "v1"
    write_version(tmp_path, "v2", **GOOD, xgboost_products=[])
    assert registry.reload_if_changed() is True


async def test_the_watcher_outlives_a_failing_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    rounds = 0

    def failing() -> bool:
        nonlocal rounds
        rounds += 1
        raise RuntimeError("a bug in a reload")

    monkeypatch.setattr(registry, "reload_if_changed", failing)
    watcher = asyncio.create_task(registry.watch(interval_s=0.01))
    await asyncio.sleep(0.2)
    assert rounds > 2 and not watcher.done()
    watcher.cancel()


@pytest.mark.parametrize("pointer", ["bytes", "directory"])
def test_an_unreadable_latest_keeps_the_served_version(tmp_path: Path, pointer: str) -> None:
    """It raised out of the reload: the API did not start, and the watcher skipped the catalogue's reload."""
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    write_version(tmp_path, "v1", **GOOD)
    assert registry.reload_if_changed() is True
    (tmp_path / "LATEST").unlink()
    if pointer == "bytes":
        (tmp_path / "LATEST").write_bytes(b"\xff\xfe")
    else:
        (tmp_path / "LATEST").mkdir()
    assert registry.reload_if_changed() is False
    assert registry.current.version == "v1"


def test_a_version_named_before_its_files_arrive_is_served_once_they_do(tmp_path: Path) -> None:
    """A copy of the models directory (rsync sorts LATEST before v...) names a version whose files are not
    there yet: it was refused for good, until a restart or a newer version."""
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    (tmp_path / "LATEST").write_text("v1")
    assert registry.reload_if_changed() is False
    assert registry.reload_if_changed() is False  # refused once, not retried while nothing changes
    write_version(tmp_path, "v1", **GOOD)
    assert registry.reload_if_changed() is True
    assert registry.current.version == "v1"


def _als(directory: Path, *, popularity: np.ndarray, factors: int = 2) -> None:
    np.savez(
        directory / "als.npz",
        clients=np.array(["c1", "c2"]),
        products=np.array(["deposit", "mortgage"]),
        client_factors=np.ones((2, factors), np.float32),
        product_factors=np.ones((2, factors), np.float32),
        popularity=popularity,
    )


@pytest.mark.parametrize(
    "damage",
    ["expert stats of another length", "expert stats with NaN", "ALS popularity NaN", "ALS popularity too short"],
)
def test_a_version_whose_arrays_would_break_every_answer_is_refused(tmp_path: Path, damage: str) -> None:
    """They loaded: wrong-length expert statistics failed the expert and XGBoost on every request (degraded
    answers, never cached); a NaN popularity scored unknown clients NaN in an answer marked good (a 500)."""
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    write_version(tmp_path, "v1", **GOOD)
    directory = tmp_path / "v1"
    n = len(SPACE.names)
    if damage == "expert stats of another length":
        np.savez(directory / "expert_stats.npz", mean=np.zeros(n + 3, np.float32), std=np.ones(n + 3, np.float32))
    elif damage == "expert stats with NaN":
        np.savez(directory / "expert_stats.npz", mean=np.full(n, np.nan, np.float32), std=np.ones(n, np.float32))
    elif damage == "ALS popularity NaN":
        _als(directory, popularity=np.array([np.nan, 0.1], np.float32))
    else:
        _als(directory, popularity=np.array([0.1], np.float32))
    assert registry.reload_if_changed() is False
    assert registry.current.version == NO_MODEL


def test_a_version_with_sound_als_arrays_is_served(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    write_version(tmp_path, "v1", **GOOD)
    _als(tmp_path / "v1", popularity=np.array([0.2, 0.1], np.float32))
    assert registry.reload_if_changed() is True
    assert registry.current.als is not None


def test_a_model_trained_after_a_catalogue_change_is_served_without_a_restart(tmp_path: Path) -> None:
    """The API built its feature space (a flag per catalogue product) once at start: after products.toml
    gained or lost a product, every model `rtrec train` made was refused as trained on other features."""
    from recommenders.catalogue import Catalogue
    from recommenders.profile import model_space

    before = load_catalogue(ROOT / "deploy" / "products.toml")
    raw = before.model_dump()
    dropped = raw["products"][-1]["id"]
    raw["products"] = raw["products"][:-1]
    raw["rules"] = [r for r in raw.get("rules", []) if r.get("product") != dropped]
    after = Catalogue.model_validate(raw)
    view = ["sum(tx.out.amount, 30d)"]
    registry = ModelRegistry(tmp_path, model_space(view, before), before)
    directory = tmp_path / "v1"
    directory.mkdir()
    names = model_space(view, after).names
    np.savez(directory / "expert_stats.npz", mean=np.zeros(len(names), np.float32), std=np.ones(len(names), np.float32))
    (directory / "meta.json").write_text(json.dumps({"features": names, **GOOD}))
    (tmp_path / "LATEST").write_text("v1")
    assert registry.reload_if_changed() is False  # the API has not read the new catalogue yet
    registry.set_catalogue(after)
    assert registry.reload_if_changed() is True
    assert registry.current.version == "v1"


def _sealed_version_with_als(models: Path) -> Path:
    """v1 as training writes it: its files, then meta.json listing their digests, then LATEST."""
    write_version(models, "v1", **GOOD)
    directory = models / "v1"
    _als(directory, popularity=np.array([0.2, 0.1], np.float32))
    meta = json.loads((directory / "meta.json").read_text())
    meta["artifacts"] = file_digests(directory, ["als.npz", "expert_stats.npz"])
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def test_a_version_is_served_only_once_every_file_its_meta_lists_has_arrived(tmp_path: Path) -> None:
    """A copy of the models directory that brought als.npz last loaded the version without ALS, and it stayed
    so: nothing said ALS had been trained."""
    directory = _sealed_version_with_als(tmp_path)
    als = (directory / "als.npz").read_bytes()
    (directory / "als.npz").unlink()
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    assert registry.reload_if_changed() is False and registry.current.version == NO_MODEL
    (directory / "als.npz").write_bytes(als[: len(als) // 2])  # arriving
    assert registry.reload_if_changed() is False
    (directory / "als.npz").write_bytes(als)
    assert registry.reload_if_changed() is True
    assert registry.current.version == "v1" and registry.current.als is not None


@pytest.mark.parametrize("listed", [{"../v0/als.npz": "0" * 64}, ["als.npz"], {"als.npz": 1}])
def test_a_malformed_artifact_list_is_refused(tmp_path: Path, listed: object) -> None:
    directory = _sealed_version_with_als(tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "artifacts": listed}))
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    assert registry.reload_if_changed() is False and registry.refused == "v1"


def test_a_file_of_another_training_under_a_version_is_refused(tmp_path: Path) -> None:
    """A copy that mixed two versions' files: each file is sound on its own (zip checks pass), its digest not."""
    directory = _sealed_version_with_als(tmp_path)
    n = len(SPACE.names)
    np.savez(directory / "expert_stats.npz", mean=np.ones(n, np.float32), std=np.ones(n, np.float32))
    registry = ModelRegistry(tmp_path, SPACE, load_catalogue(ROOT / "deploy" / "products.toml"))
    assert registry.reload_if_changed() is False and registry.refused == "v1"
