"""The catalogue file as the API reloads it (``recommenders.catalogue``): a file that parses but holds values
that would break every request (a zero blocking period, a negative budget, a NaN weight, a rule for a product
the catalogue lacks) is refused, and the last good catalogue stays."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from recommenders.catalogue import Catalogue, CatalogueFile
from tests.conftest import ROOT

TEXT = (ROOT / "deploy" / "products.toml").read_text()
GOOD = tomllib.loads(TEXT)


@pytest.mark.parametrize(
    "change",
    [
        {"decision": {"applied_block_days": 0}},
        {"decision": {"applied_block_days": -1}},
        {"decision": {"budget_s": -1}},
        {"decision": {"budget_s": 0.12}},  # every request on the fast path (manager.recommend.FAST_PATH_BELOW_S)
        {"decision": {"default_limit": 0}},
        {"decision": {"default_limit": 51}},
        {"decision": {"weights": {"xgboost": float("nan")}}},
        {"decision": {"cache_ttl_s": -5}},
        {"rules": [{"name": "r", "product": "no_such_product", "action": "suppress", "everyone": True}]},
        {"products": [], "rules": []},
        {"products": [GOOD["products"][0], GOOD["products"][0]], "rules": []},
        {"products": [{**GOOD["products"][0], "value": float("inf")}], "rules": []},
        # the expert's weighted mean divided by zero, or overflowed, on every request
        {"products": [{**GOOD["products"][0], "portrait": {"age_years": 1.0, "tenure_years": -1.0}}], "rules": []},
        {"products": [{**GOOD["products"][0], "portrait": {"age_years": 0.0}}], "rules": []},
    ],
)
def test_values_that_would_break_serving_are_refused(change: dict[str, Any]) -> None:
    broken = {**GOOD, **change}
    if "decision" in change:
        broken["decision"] = {**GOOD["decision"], **change["decision"]}
    with pytest.raises(ValidationError):
        Catalogue.model_validate(broken)


def test_a_refused_edit_keeps_the_last_good_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "products.toml"
    path.write_text(TEXT)
    catalogue = CatalogueFile(path)
    before = catalogue().fingerprint()
    assert "applied_block_days = 180" in TEXT
    path.write_text(TEXT.replace("applied_block_days = 180", "applied_block_days = 0"))
    os.utime(path, ns=(1, 1))  # a change the reload sees even within the clock's resolution
    assert catalogue.reload_if_changed() is False and catalogue().fingerprint() == before
    path.write_text(TEXT.replace("applied_block_days = 180", "applied_block_days = 90"))
    os.utime(path, ns=(2, 2))
    assert catalogue.reload_if_changed() is True and catalogue().decision.applied_block_days == 90


def _cut_before(text: str, marker: str) -> str:
    return text[: text.index(marker)]


def test_a_product_without_eligibility_is_refused() -> None:
    """A product line cut before its eligibility would otherwise be open to everyone (fail open)."""
    product = {k: v for k, v in GOOD["products"][0].items() if k != "eligibility"}
    with pytest.raises(ValidationError, match="eligibility"):
        Catalogue.model_validate({**GOOD, "products": [product], "rules": []})


def test_a_file_still_being_written_is_read_only_once_it_settles(tmp_path: Path) -> None:
    """A copy cut at a line boundary (here: before the rules) is valid TOML; it must not be served while the
    file may still be growing, and the whole file is served once it has been left alone."""
    path = tmp_path / "products.toml"
    path.write_text(TEXT.replace("applied_block_days = 180", "applied_block_days = 90"))
    os.utime(path, ns=(1, 1))
    catalogue = CatalogueFile(path)
    prefix = _cut_before(TEXT, "[[rules]]")
    assert tomllib.loads(prefix)["decision"] and Catalogue.model_validate(tomllib.loads(prefix))  # it would load
    path.write_text(prefix)  # being written: modified just now
    written_at = path.stat().st_mtime
    assert catalogue.reload_if_changed(now=written_at + 0.1) is False
    assert catalogue().decision.applied_block_days == 90 and catalogue().rules
    path.write_text(TEXT)
    done_at = path.stat().st_mtime
    assert catalogue.reload_if_changed(now=done_at + 0.5) is False  # not settled yet
    assert catalogue.reload_if_changed(now=done_at + 1.5) is True
    assert catalogue().decision.applied_block_days == 180 and len(catalogue().rules) == len(GOOD["rules"])


def test_a_file_written_to_while_it_is_read_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recommenders.catalogue as module

    path = tmp_path / "products.toml"
    path.write_text(TEXT)
    os.utime(path, ns=(1, 1))
    catalogue = CatalogueFile(path)
    path.write_text(TEXT.replace("applied_block_days = 180", "applied_block_days = 90"))
    os.utime(path, ns=(2, 2))
    real_load = module.load_catalogue

    def load_while_a_writer_starts(p: Path) -> Catalogue:
        loaded = real_load(p)
        os.utime(path, ns=(3, 3))  # a write began after the read
        return loaded

    monkeypatch.setattr(module, "load_catalogue", load_while_a_writer_starts)
    assert catalogue.reload_if_changed() is False and catalogue().decision.applied_block_days == 180
    monkeypatch.setattr(module, "load_catalogue", real_load)
    assert catalogue.reload_if_changed() is True and catalogue().decision.applied_block_days == 90


def test_the_smallest_budget_leaves_the_models_time_before_the_fast_path() -> None:
    from manager.recommend import DECISION_RESERVE_S, FAST_PATH_BELOW_S
    from recommenders.catalogue import MIN_BUDGET_S

    assert MIN_BUDGET_S - FAST_PATH_BELOW_S - DECISION_RESERVE_S >= 0.05
