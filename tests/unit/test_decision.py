from __future__ import annotations

import pytest

from recommenders.catalogue import Catalogue, Rule
from recommenders.decision import allowed_products, blend, decide
from recommenders.profile import ClientSnapshot
from recommenders.scorer import ProductScore


def client(
    segment: str = "retail",
    age: float | None = 35,
    tenure: float | None = 400,
    held: set[str] | None = None,
    applied: set[str] | None = None,
    client_id: str = "c1",
) -> ClientSnapshot:
    return ClientSnapshot(client_id, 1.79e9, {}, segment, age, tenure, held or set(), applied or set())


def scores(products: list[str], value: float = 0.5) -> dict[str, ProductScore]:
    return {p: ProductScore(p, value + i * 0.01) for i, p in enumerate(products)}


def test_held_applied_and_ineligible_products_are_dropped(catalogue: Catalogue) -> None:
    c = client(held={"deposit"}, applied={"insurance"}, age=19)
    verdicts = allowed_products(c, catalogue)
    assert verdicts["deposit"] == "already held"
    assert verdicts["insurance"] == "already applied for"
    assert verdicts["credit_card"] == "younger than 21"
    assert verdicts["sme_overdraft"] is not None and "segment" in verdicts["sme_overdraft"]
    items = decide(c, catalogue, {"xgboost": scores(catalogue.ids)}, {}, limit=20)
    shown = {i.product for i in items}
    assert not shown & {"deposit", "insurance", "credit_card", "consumer_loan", "sme_overdraft", "sme_acquiring"}
    assert shown  # something is always shown


def test_a_rule_without_targets_applies_to_nobody() -> None:
    assert not Rule(name="empty-watchlist", product="x", action="suppress").applies_to("c1", "retail")
    assert Rule(name="all", product="x", action="suppress", everyone=True).applies_to("c1", None)


def test_tenure_and_age_limits(catalogue: Catalogue) -> None:
    assert allowed_products(client(tenure=10), catalogue)["credit_card"] == "client for less than 30 days"
    assert allowed_products(client(age=75), catalogue)["consumer_loan"] == "older than 70"
    # fail closed: a rule that needs a fact the store does not have refuses
    unknown = allowed_products(client(segment=None, age=None, tenure=None), catalogue)  # type: ignore[arg-type]
    assert unknown["credit_card"] == "segment unknown"
    assert unknown["deposit"] == "age unknown"  # open to every segment, but only from 18
    assert allowed_products(client(tenure=None), catalogue)["credit_card"] == "time with the bank unknown"
    assert all(verdict is not None for verdict in unknown.values())


def test_manual_rules_force_boost_suppress(catalogue: Catalogue) -> None:
    catalogue.rules = [
        Rule(name="push-insurance", product="insurance", action="force", clients=["vip"]),
        Rule(name="boost-deposit", product="deposit", action="boost", factor=10.0, segments=["retail"]),
        Rule(name="hide-invest", product="investments", action="suppress", everyone=True),
    ]
    results = {"xgboost": {p: ProductScore(p, 0.5) for p in catalogue.ids}}
    results["xgboost"]["insurance"] = ProductScore("insurance", 0.01)
    vip = decide(client(client_id="vip"), catalogue, results, {}, limit=3)
    assert vip[0].product == "insurance" and "rule:push-insurance" in vip[0].sources
    assert vip[1].product == "deposit" and vip[1].reasons[0].startswith("bank campaign")
    assert "investments" not in {i.product for i in decide(client(), catalogue, results, {}, limit=20)}
    assert allowed_products(client(), catalogue)["investments"] == "suppressed by rule hide-invest"
    other = decide(client(client_id="someone"), catalogue, results, {}, limit=1)
    assert other[0].product == "deposit"  # the force rule names clients: not this one


def test_fallback_order_expert_then_popularity(catalogue: Catalogue) -> None:
    c = client()
    only_expert = decide(c, catalogue, {"expert": scores(catalogue.ids)}, {}, limit=3)
    assert all(i.sources == ["expert"] for i in only_expert)
    popularity = {p: 0.1 for p in catalogue.ids} | {"savings_account": 0.9}
    nothing = decide(c, catalogue, {}, popularity, limit=3)
    assert nothing[0].product == "savings_account" and nothing[0].sources == ["popularity"]


def test_blend_uses_base_rate_for_unscored_products() -> None:
    results = {
        "xgboost": {"a": ProductScore("a", 0.2)},
        "expert": {"a": ProductScore("a", 0.1), "b": ProductScore("b", 0.9)},
    }
    blended = blend(["a", "b"], results, {"xgboost": 0.8, "expert": 0.2}, {"a": 0.05, "b": 0.05})
    assert blended["a"][0] == pytest.approx(0.8 * 0.2 + 0.2 * 0.1)
    # b has no model: its xgboost part is the base rate, so the expert alone cannot lift it above a
    assert blended["b"][0] == pytest.approx(0.8 * 0.05 + 0.2 * 0.9)
    assert blended["b"][1] == ["expert"]
