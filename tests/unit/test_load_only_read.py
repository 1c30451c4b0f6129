"""A store loaded only to train and judge models (``rtrec evaluate``) takes just the transaction features a
snapshot reads (``load_events(transaction_names=...)``): every row a snapshot aggregates is the same as in a
store loaded whole (corrections: ``tests/unit/test_extract.py``)."""

from __future__ import annotations

import asyncio

from extractors.direct import load_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.fake import InMemoryFeatureStore
from feature_store.records import OTHER_ANCHORS
from recommenders.catalogue import Catalogue
from recommenders.profile import FeatureSpace, features_read


def test_a_store_of_the_features_read_holds_every_row_a_snapshot_aggregates(
    space: FeatureSpace, catalogue: Catalogue
) -> None:
    events = list(BankSimulator(SimulationConfig(clients=20, days=60, seed=5)).events())
    whole, only_read = InMemoryFeatureStore(), InMemoryFeatureStore()
    read = features_read(space, catalogue)
    asyncio.run(load_events(whole, events))
    asyncio.run(load_events(only_read, events, transaction_names=read))

    def aggregated(store: InMemoryFeatureStore, subject: str) -> set[tuple[object, ...]]:
        return {row for row in store.snapshot(subject) if row[1] in read}

    assert whole.subjects() == only_read.subjects()
    for subject in whole.subjects():
        assert aggregated(whole, subject) == aggregated(only_read, subject)
        # only transaction features nobody reads were left out; the anchors stay
        left_out = whole.snapshot(subject) - only_read.snapshot(subject)
        assert all(row[0] == "transactions" and row[1] not in read | OTHER_ANCHORS.keys() for row in left_out)
    assert len(only_read.features) < 0.8 * len(whole.features)  # the point: most transaction rows go unread
