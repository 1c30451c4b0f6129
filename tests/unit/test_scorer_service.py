"""A per-product scorer service (``recommenders.scorer_service``) follows a catalogue change like the manager:
before, it kept the catalogue it started with, refused every version trained after a product was added (other
features), and answered the manager's requests 422 until it was restarted."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import xgboost as xgb

from manager.remote import RemoteScorer
from recommenders.catalogue import SETTLE_S, CatalogueFile, load_catalogue
from recommenders.config import RecommendationSettings
from recommenders.profile import ClientSnapshot, FeatureSpace, model_space
from recommenders.registry import ModelRegistry, file_digests
from recommenders.scorer_service import create_scorer_app
from tests.conftest import ROOT

VIEW = ["sum(tx.out.amount,30d)", "avg(balance,90d)"]
NEW_PRODUCT = """
[[products]]
id = "pet_insurance"
title = "Pet insurance"
value = 1.0
eligibility = { min_age = 18, segments = ["retail"] }
portrait = { "avg(balance,90d)" = 1.0 }
"""


@dataclass
class ScorerSettings:
    recommendations: RecommendationSettings
    views: dict[str, list[str]] = field(default_factory=lambda: {"client_profile": VIEW})


def _train_version(models: Path, version: str, space: FeatureSpace, product: str) -> None:
    """A version as training writes it: a booster on ``space``'s features, statistics, meta.json, LATEST."""
    directory = models / version
    directory.mkdir(parents=True)
    rows = np.random.default_rng(1).normal(size=(64, len(space.names))).astype(np.float32)
    labels = (rows[:, 0] > 0).astype(np.float32)
    booster = xgb.train(
        {"max_depth": 2, "objective": "binary:logistic"}, xgb.DMatrix(rows, label=labels), num_boost_round=3
    )
    booster.save_model(directory / f"xgb_{product}.ubj")
    n = len(space.names)
    np.savez(directory / "expert_stats.npz", mean=np.zeros(n, np.float32), std=np.ones(n, np.float32))
    meta = {
        "features": space.names,
        "popularity": {product: 0.1},
        "segment_popularity": {},
        "blend": {},
        "xgboost_products": [product],
        "artifacts": file_digests(directory, [f"xgb_{product}.ubj", "expert_stats.npz"]),
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    (models / "LATEST").write_text(version)


SNAPSHOT = ClientSnapshot(
    "c1", time.time(), {VIEW[0]: 120.0, VIEW[1]: 900.0}, "retail", 40.0, 800.0, held=set(), applied=set()
)


@asynccontextmanager
async def _scorer(settings: ScorerSettings, product: str) -> AsyncIterator[httpx.AsyncClient]:
    """The service with its lifespan (model and catalogue watcher) running, called in process."""
    app = create_scorer_app(settings, product)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scorer") as client:
            yield client


async def _ask(client: httpx.AsyncClient, space: FeatureSpace) -> tuple[int, dict[str, object]]:
    response = await client.post(
        "/v1/score", json={"client_id": "c1", "features": space.names, "vector": [1.0] * len(space.names)}
    )
    return response.status_code, response.json()


async def _wait_for(
    client: httpx.AsyncClient, space: FeatureSpace, version: str, timeout: float = 10.0
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await _ask(client, space)
        if status == 200 and body["version"] == version:
            return body
        assert time.monotonic() < deadline, f"still {status} {body}"
        await asyncio.sleep(0.05)


async def test_a_scorer_moves_to_a_version_trained_after_a_product_was_added(tmp_path: Path) -> None:
    catalogue_path, models = tmp_path / "products.toml", tmp_path / "models"
    catalogue_path.write_text((ROOT / "deploy" / "products.toml").read_text())
    old_space = model_space(VIEW, load_catalogue(catalogue_path))
    _train_version(models, "v1", old_space, "deposit")
    settings = ScorerSettings(
        RecommendationSettings(catalogue=catalogue_path, models_dir=models, reload_interval_s=0.05)
    )
    async with _scorer(settings, "deposit") as client:
        assert (await _wait_for(client, old_space, "v1"))["score"] is not None

        catalogue_path.write_text(catalogue_path.read_text() + NEW_PRODUCT)
        settled = time.time() - 2 * SETTLE_S  # written a while ago: no need to wait for it to settle
        os.utime(catalogue_path, (settled, settled))
        new_space = model_space(VIEW, load_catalogue(catalogue_path))
        assert new_space.names != old_space.names  # a holds_pet_insurance flag
        # until the new training the old version serves the old features; the new ones are a conflict, not a
        # score on misplaced values
        status, body = await _ask(client, new_space)
        assert status == 409 and "v1" in str(body["detail"])
        _train_version(models, "v2", new_space, "deposit")
        assert (await _wait_for(client, new_space, "v2"))["score"] is not None
        assert (await _ask(client, old_space))[0] == 409


async def test_the_manager_sends_a_remote_scorer_the_features_of_the_version_it_serves(tmp_path: Path) -> None:
    """The manager sent the features of the catalogue it started with: after a product change and a new
    training every remote score was refused, and the product was scored by nothing but base rates."""
    catalogue_path, models = tmp_path / "products.toml", tmp_path / "models"
    catalogue_path.write_text((ROOT / "deploy" / "products.toml").read_text())
    catalogue = CatalogueFile(catalogue_path)
    old_space = model_space(VIEW, catalogue())
    _train_version(models, "v1", old_space, "deposit")
    manager_registry = ModelRegistry(models, old_space, catalogue())
    manager_registry.reload_if_changed()
    settings = ScorerSettings(
        RecommendationSettings(catalogue=catalogue_path, models_dir=models, reload_interval_s=0.05)
    )
    async with _scorer(settings, "deposit") as client:
        remote = RemoteScorer("deposit", "http://scorer", manager_registry.served_space, client)
        assert "deposit" in await remote.score(SNAPSHOT, ["deposit"]) and remote.version == "v1"
        catalogue_path.write_text(catalogue_path.read_text() + NEW_PRODUCT)
        settled = time.time() - 2 * SETTLE_S
        os.utime(catalogue_path, (settled, settled))
        assert catalogue.reload_if_changed()
        manager_registry.set_catalogue(catalogue())  # what the manager's watcher does
        _train_version(models, "v2", model_space(VIEW, catalogue()), "deposit")
        assert manager_registry.reload_if_changed() and manager_registry.current.version == "v2"
        await _wait_for(client, manager_registry.served_space(), "v2")  # the service's own watcher
        assert "deposit" in await remote.score(SNAPSHOT, ["deposit"]) and remote.version == "v2"


async def test_values_that_do_not_match_their_names_are_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    space = model_space(VIEW, load_catalogue(ROOT / "deploy" / "products.toml"))
    _train_version(models, "v1", space, "deposit")
    settings = ScorerSettings(RecommendationSettings(catalogue=ROOT / "deploy" / "products.toml", models_dir=models))
    async with _scorer(settings, "deposit") as client:
        response = await client.post("/v1/score", json={"client_id": "c1", "features": space.names, "vector": [1.0]})
        assert response.status_code == 422 and "feature names" in response.json()["detail"]
