"""What a client holds, as the serving filter reads it (``recommenders.profile``) and as long as the store keeps
it (``feature_store.ttl``): a product once opened and not closed since stays held, whatever its age."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from extractors.decode import validate_event
from extractors.extract import ExtractionConfig, extract
from extractors.ops import apply_ops
from feature_store.config import TtlSettings
from feature_store.fake import InMemoryFeatureStore
from feature_store.ttl import DAY, TtlPolicy
from recommenders.catalogue import load_catalogue
from recommenders.profile import FeatureSpace, all_specs, snapshot_from, status_snapshot, status_specs

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_790_000_000.0


def held(facts: dict[str, float]) -> set[str]:
    catalogue = load_catalogue(ROOT / "deploy" / "products.toml")
    specs = status_specs(catalogue)
    return status_snapshot("c1", NOW, catalogue, [facts.get(s.label) for s in specs], specs).held


@pytest.mark.parametrize(
    ("closed", "is_held"),
    [
        (None, True),
        (NOW - 20 * DAY, True),  # closed before the newer opening
        (NOW - 10 * DAY, True),  # closed and reopened in the same second (a card reissued): held
        (NOW - 5 * DAY, False),  # closed after its opening
    ],
)
def test_a_product_is_held_from_its_opening_until_a_later_closing(closed: float | None, is_held: bool) -> None:
    facts = {"last(product.credit_card.opened)": NOW - 10 * DAY}
    if closed is not None:
        facts["last(product.credit_card.closed)"] = closed
    assert ("credit_card" in held(facts)) == is_held


OPENED, CLOSED = "product.credit_card.opened", "product.credit_card.closed"


@pytest.mark.parametrize(
    ("events", "is_held"),
    [
        ([(OPENED, -400), (OPENED, -10), (CLOSED, -9)], True),  # a card reissued: the old one closed after
        ([(OPENED, -400), (OPENED, -10.8), (CLOSED, -10.3)], True),  # a deposit rolled over the same day
        ([(OPENED, -400), (CLOSED, -9)], False),  # the only one closed
        ([(OPENED, -400), (OPENED, -10), (CLOSED, -9), (CLOSED, -5)], False),  # both closed
        ([(CLOSED, -400), (OPENED, -10)], True),  # a closing whose opening predates the data, then a new one
        ([(CLOSED, -9), (OPENED, -400), (OPENED, -10)], True),  # the order of arrival does not matter
        # with the account named: a resend under another time is the same opening, and the closing is known
        ([(OPENED, -400, "a1"), (OPENED, -399, "a1"), (CLOSED, -9, "a1")], False),
        ([(OPENED, -400, "a1"), (OPENED, -10, "a2"), (CLOSED, -9, "a1")], True),
    ],
)
def test_one_accounts_closing_does_not_hide_another_still_open(events: list[tuple[str, float]], is_held: bool) -> None:
    """A product event names no account: the last closing alone decided, and a client whose card was reissued
    (the new one opened, then the old one closed) was offered the card he holds. The events go through the
    extractors into the in-memory store, and the filter reads what the server reads."""
    store = InMemoryFeatureStore()
    for name, days, *account in events:
        action = name.rsplit(".", 1)[1]
        event = {"client_id": "c1", "product": "credit_card", "action": action, "ts": NOW + days * DAY}
        event |= {"account_id": account[0]} if account else {}
        asyncio.run(apply_ops(store, extract(validate_event("bank.products", event), ExtractionConfig())))
    catalogue = load_catalogue(ROOT / "deploy" / "products.toml")
    specs = status_specs(catalogue)
    values = asyncio.run(store.aggregate("c1", specs, NOW))
    assert ("credit_card" in status_snapshot("c1", NOW, catalogue, values, specs).held) == is_held


@pytest.mark.parametrize("source", ["products", "client_profile", "registry"])
def test_what_holds_until_changed_outlives_any_client(source: str) -> None:
    """A deposit opened 40 years ago and never closed is still held (at 10 years it expired and was offered)."""
    opened = NOW - 40 * 365.25 * DAY
    assert TtlPolicy.from_settings(TtlSettings()).expires_at(source, "x", opened) > NOW


@pytest.mark.parametrize("not_a_date", [True, False, float("nan"), float("inf"), "1990-01-01"])
def test_a_date_fact_that_is_no_number_leaves_the_age_unknown(not_a_date: object) -> None:
    """``true`` is an int to Python: a birth date of ``true`` read as 1970 made a minor 56 years old. Anything
    but a finite number is an unknown date, and an unknown age refuses every product with an age limit."""
    catalogue = load_catalogue(ROOT / "deploy" / "products.toml")
    space = FeatureSpace.from_view(["last(profile.segment)", "last(profile.birth_date)", "last(profile.registered_at)"])
    specs = all_specs(space, catalogue)
    facts = {
        "last(profile.segment)": "retail",
        "last(profile.birth_date)": not_a_date,
        "last(profile.registered_at)": not_a_date,
    }
    snapshot = snapshot_from("c1", NOW, space, catalogue, [facts.get(s.label) for s in specs], specs)
    assert snapshot.age_years is None and snapshot.tenure_days is None
    limited = [p for p in catalogue.products if p.eligibility.min_age is not None]
    assert limited and all(
        p.eligibility.refusal(snapshot.segment, snapshot.age_years, snapshot.tenure_days) for p in limited
    )
    born = {**facts, "last(profile.birth_date)": NOW - 16 * 365.25 * DAY}
    snapshot = snapshot_from("c1", NOW, space, catalogue, [born.get(s.label) for s in specs], specs)
    assert snapshot.age_years is not None and round(snapshot.age_years) == 16
