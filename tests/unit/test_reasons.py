from recommenders.profile import DERIVED
from recommenders.reasons import describe


def test_reasons_read_like_a_banker_and_follow_the_clients_level() -> None:
    assert describe("sum(tx.out.mcc.travel,365d)", 1.2) == "high total travel spending over the last 365 days"
    assert describe("count(tx.in.salary,90d)", 0.5) == "frequent salary payments over the last 90 days"
    assert describe("count(tx.out.amount,30d)", -2.0) == "little or no spending over the last 30 days"
    assert describe("min(balance,180d)", 0.3) == "high minimum account balance over the last 180 days"
    assert describe("max(tx.out.amount,30d)", 0.3) == "high peak spending over the last 30 days"
    assert describe("segment_sme", 1.0) == "small-business client"
    assert describe("segment_retail", -1.0) == "not a retail client"
    assert describe("age_years", -0.2) == "low age"
    assert describe("month_sin", 0.4) == "the time of year"
    assert describe("inflow_spike", 1.0) == "high recent one-off inflow for the income"
    assert describe("holds.credit_card", 1.0) == "holds a credit card"
    assert describe("holds.deposit", -1.0) == "has no deposit"
    assert describe("changes(history.profile.region,90d)", 1.0) == "region changed over the last 90 days"
    assert describe("changes(history.profile.segment,180d)", -1.0) == "segment unchanged over the last 180 days"


def test_every_derived_feature_has_words() -> None:
    """A derived feature added without words would show its code name to the client."""
    for name in DERIVED:
        assert name not in describe(name, 1.0), name
