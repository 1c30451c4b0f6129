"""The derived behaviour ratios of the model's feature vector (``profile.behaviour``): computed from the view's
aggregates, income from salary or else a third of 90 days' inflows, and missing (never zero or infinite) when
a part is missing or the divisor is not positive."""

from __future__ import annotations

import math

import pytest

from recommenders.catalogue import Catalogue, Eligibility, Product
from recommenders.profile import BEHAVIOUR, DERIVED, ClientSnapshot, FeatureSpace, behaviour, model_space

FULL = {
    "avg(tx.in.salary,365d)": 100_000.0,
    "sum(tx.in.amount,90d)": 330_000.0,
    "sum(tx.out.amount,30d)": 50_000.0,
    "sum(tx.out.amount,90d)": 120_000.0,
    "sum(tx.out.amount,365d)": 400_000.0,
    "avg(balance,90d)": 200_000.0,
    "last(balance)": 300_000.0,
    "sum(tx.out.channel.online,90d)": 60_000.0,
    "sum(tx.out.mcc.travel,365d)": 40_000.0,
    "max(balance,30d)": 350_000.0,
    "min(balance,180d)": 150_000.0,
    "count(tx.in.salary,30d)": 1,
    "count(tx.in.salary,90d)": 3,
    "max(tx.in.amount,30d)": 500_000.0,
    "min(balance,30d)": 25_000.0,
    "avg(tx.in.salary,30d)": 130_000.0,
}


def test_ratios_from_a_full_view() -> None:
    assert behaviour(FULL) == pytest.approx(
        {
            "spend_to_income": 0.5,
            "balance_to_income": 2.0,
            "balance_trend": 1.5,
            "spend_trend": 50_000 / 40_000,
            "online_share": 0.5,
            "travel_share": 0.1,
            "balance_swing": 2.0,
            "salary_recency": 1.0,
            "inflow_spike": 5.0,
            "balance_floor": 0.25,
            "salary_growth": 1.3,
        }
    )


def test_income_falls_back_to_inflows_and_missing_parts_give_missing_ratios() -> None:
    no_salary = {k: v for k, v in FULL.items() if "salary" not in k}
    assert behaviour(no_salary)["balance_to_income"] == pytest.approx(200_000 / 110_000)
    nothing_in = {**no_salary, "sum(tx.in.amount,90d)": 0.0}
    assert behaviour(nothing_in)["balance_to_income"] is None  # no income: missing, not infinite
    assert behaviour({})["travel_share"] is None
    assert behaviour({**FULL, "sum(tx.out.amount,365d)": None})["travel_share"] is None
    assert behaviour({**FULL, "last(balance)": True})["balance_trend"] is None  # not a number
    assert behaviour({**FULL, "count(tx.in.salary,30d)": 0})["salary_recency"] == 0.0  # the salary stopped
    assert behaviour({**FULL, "count(tx.in.salary,90d)": 0})["salary_recency"] is None  # never had one
    assert behaviour(no_salary)["salary_growth"] is None  # no salary: no raise to see
    assert behaviour(no_salary)["inflow_spike"] == pytest.approx(500_000 / 110_000)


def test_the_ratios_are_model_inputs_in_a_fixed_order() -> None:
    space = FeatureSpace.from_view(sorted(FULL_SPECS))
    assert space.names[-len(DERIVED) :] == list(DERIVED) and set(BEHAVIOUR) <= set(DERIVED)
    snapshot = ClientSnapshot("c", 1.79e9, dict(FULL), "retail", 40.0, 400.0, set(), set())
    vector = snapshot.vector(space)
    assert vector[space.names.index("balance_to_income")] == pytest.approx(2.0)
    empty = ClientSnapshot("c", 1.79e9, {}, "retail", 40.0, 400.0, set(), set()).vector(space)
    assert math.isnan(empty[space.names.index("spend_trend")])


FULL_SPECS = [label.replace(",", ", ") for label in FULL]


def test_the_model_space_ends_with_a_flag_per_catalogue_product_the_client_holds() -> None:
    catalogue = Catalogue(
        products=[
            Product(id="deposit", title="Deposit", eligibility=Eligibility()),
            Product(id="credit_card", title="Card", eligibility=Eligibility()),
        ]
    )
    space = model_space(sorted(FULL_SPECS), catalogue)
    assert space.names[-2:] == ["holds.deposit", "holds.credit_card"]
    holder = ClientSnapshot("c", 1.79e9, dict(FULL), "retail", 40.0, 400.0, {"credit_card"}, set())
    assert holder.vector(space)[-2:].tolist() == [0.0, 1.0]
    assert FeatureSpace.from_view(sorted(FULL_SPECS)).names == space.names[:-2]  # no catalogue: no flags
