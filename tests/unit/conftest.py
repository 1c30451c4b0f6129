"""Fixtures of the unit tests: the deployed catalogue and the deployed client view, read from the repo's files
(no store, no broker)."""

from __future__ import annotations

import tomllib

import pytest

from recommenders.catalogue import Catalogue, load_catalogue
from recommenders.profile import FeatureSpace
from tests.conftest import ROOT


@pytest.fixture
def catalogue() -> Catalogue:
    return load_catalogue(ROOT / "deploy" / "products.toml")


@pytest.fixture
def space() -> FeatureSpace:
    with open(ROOT / "deploy" / "local.toml", "rb") as handle:
        return FeatureSpace.from_view(tomllib.load(handle)["views"]["client_profile"])
