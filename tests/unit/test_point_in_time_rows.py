"""The point-in-time rows of training (``dataset.build_dataset``) over a store stand-in that answers by spec
label: features are read as of the cut and labels as of cut + horizon; a product the client held, had applied
for or was not eligible for at the cut is masked (neither learned from nor scored); a client the store knows
nothing about is left out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from feature_store.client import FeatureStore
from feature_store.specs import AggregateSpec
from recommenders.catalogue import load_catalogue
from recommenders.dataset import DAY, build_dataset
from recommenders.profile import FeatureSpace
from tests.conftest import ROOT

CUT = 1.8e9


class LabelStore:
    """``aggregate_at`` answers from ``facts[subject]`` by label, and remembers at what times it was asked."""

    def __init__(self, facts: dict[str, dict[str, Any]], future: dict[str, dict[str, Any]]) -> None:
        self.facts, self.future = facts, future
        self.asked: list[float] = []

    async def aggregate_at(
        self, subject: str, specs: Sequence[AggregateSpec], times: Sequence[float]
    ) -> list[list[Any]]:
        self.asked.extend(times)
        return [
            [(self.facts if now <= CUT else self.future).get(subject, {}).get(spec.label) for spec in specs]
            for now in times
        ]


async def test_held_applied_and_ineligible_products_are_masked_and_labels_come_from_the_horizon() -> None:
    catalogue = load_catalogue(ROOT / "deploy" / "products.toml")
    space = FeatureSpace.from_view(
        ["sum(tx.out.amount, 30d)", "last(profile.segment)", "last(profile.birth_date)", "last(profile.registered_at)"]
    )
    retail = {
        "last(profile.segment)": "retail",
        "last(profile.birth_date)": CUT - 40 * 365.25 * DAY,
        "last(profile.registered_at)": CUT - 400 * DAY,
        "last(product.deposit.opened)": CUT - 10 * DAY,
        "count(app.insurance.submitted,180d)": 1,
        "sum(tx.out.amount,30d)": 5000.0,
    }
    store = LabelStore(
        {"c1": retail},
        {"c1": {"count(app.credit_card.submitted,30d)": 1, "count(product.sme_overdraft.opened,30d)": 1}},
    )
    data = await build_dataset(cast(FeatureStore, store), space, catalogue, ["c1", "ghost"], [CUT], 30)
    assert data.clients == ["c1"]  # "ghost" has no facts at all: left out
    assert sorted(set(store.asked)) == [CUT, CUT + 30 * DAY]
    mask = dict(zip(catalogue.ids, data.mask[0].tolist(), strict=True))
    labels = dict(zip(catalogue.ids, data.labels[0].tolist(), strict=True))
    assert mask["deposit"] == 0 and mask["insurance"] == 0  # held, applied for
    assert mask["sme_overdraft"] == 0 and mask["sme_acquiring"] == 0  # not for retail clients
    assert mask["credit_card"] == 1 and labels["credit_card"] == 1
    assert labels["sme_overdraft"] == 1  # the label is kept; the mask keeps it out of training and scoring
    assert data.features[0, space.names.index("sum(tx.out.amount,30d)")] == np.float32(5000.0)


async def test_a_row_before_a_profile_change_sees_the_profile_of_then() -> None:
    """The newest client data (``profile.*``) is dated at its change, so as of an earlier cut it is not there
    yet; the version kept in the history (``history.*``) gives the facts of then. Before the history, such a
    client had no segment or age at that cut, and most products were masked as not eligible."""
    catalogue = load_catalogue(ROOT / "deploy" / "products.toml")
    space = FeatureSpace.from_view(
        [
            "last(profile.segment)",
            "last(profile.birth_date)",
            "last(profile.registered_at)",
            "last(history.profile.segment)",
            "last(history.profile.birth_date)",
            "last(history.profile.registered_at)",
            "changes(history.profile.region, 90d)",
        ]
    )
    as_of_then = {  # the client became an SME after the cut: the profile's newest version is not visible yet
        "last(history.profile.segment)": "retail",
        "last(history.profile.birth_date)": CUT - 30 * 365.25 * DAY,
        "last(history.profile.registered_at)": CUT - 400 * DAY,
        "changes(history.profile.region,90d)": 1,
    }
    store = LabelStore({"c1": as_of_then}, {})
    data = await build_dataset(cast(FeatureStore, store), space, catalogue, ["c1"], [CUT], 30)
    snapshot = data.snapshots[0]
    assert snapshot.segment == "retail" and snapshot.age_years is not None and round(snapshot.age_years) == 30
    mask = dict(zip(catalogue.ids, data.mask[0].tolist(), strict=True))
    assert mask["credit_card"] == 1 and mask["sme_acquiring"] == 0  # eligible as the retail client of then
    assert data.features[0, space.names.index("changes(history.profile.region,90d)")] == np.float32(1)
    # once the newest version is there (serving), its facts hold, and one it left out stays out
    newest = {**as_of_then, "last(profile.segment)": "sme", "last(profile.registered_at)": CUT - 400 * DAY}
    data = await build_dataset(cast(FeatureStore, LabelStore({"c1": newest}, {})), space, catalogue, ["c1"], [CUT], 30)
    assert data.snapshots[0].segment == "sme" and data.snapshots[0].age_years is None


class CountingStore(LabelStore):
    """Remembers the most ``aggregate_at`` calls it had in flight at once."""

    def __init__(self) -> None:
        super().__init__({}, {})
        self.in_flight = self.most_in_flight = 0

    async def aggregate_at(
        self, subject: str, specs: Sequence[AggregateSpec], times: Sequence[float]
    ) -> list[list[Any]]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        return await super().aggregate_at(subject, specs, times)


async def test_training_reads_as_many_clients_at_a_time_as_it_is_told() -> None:
    """`rtrec train` against the serving store reads one client at a time (recommendations.training_*)."""
    catalogue = load_catalogue(ROOT / "deploy" / "products.toml")
    space = FeatureSpace.from_view(["last(profile.segment)"])
    clients = [f"c{i}" for i in range(20)]
    for concurrency in (1, 4):
        store = CountingStore()
        await build_dataset(cast(FeatureStore, store), space, catalogue, clients, [CUT], 30, concurrency=concurrency)
        assert store.most_in_flight == concurrency
