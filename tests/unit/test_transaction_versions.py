"""A transaction's versions end the same however a consumer batches them: one call per event, drawn batches or
one batch (the in-memory store, which the Kafka drills take for the real one; tests/integration/
test_store_superseding.py holds the real store to it). The last version that changed anything wins."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from extractors.ops import AppendFeatures, versions_together
from feature_store.fake import InMemoryFeatureStore
from tests.transaction_versions import apply_in_batches, batches, versions


def _state(store: InMemoryFeatureStore) -> dict[tuple[str, str], object]:
    return {(f.object, f.name): f.value for f in store.features.values()}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_batching_never_changes_what_the_versions_leave(data: st.DataObject) -> None:
    events = data.draw(versions())
    split = batches(data.draw, events)
    with asyncio.Runner() as runner:
        one_by_one, batched, at_once = InMemoryFeatureStore(), InMemoryFeatureStore(), InMemoryFeatureStore()
        apply_in_batches(runner, one_by_one, [[e] for e in events])
        apply_in_batches(runner, batched, split)
        apply_in_batches(runner, at_once, [list(events)])
    assert _state(batched) == _state(one_by_one) == _state(at_once)
    # every transaction ends as one whole version: one direction, each name at most once
    for tx_id in {o for o, _ in _state(one_by_one)}:
        names = [n for o, n in _state(one_by_one) if o == tx_id]
        assert len({n.split(".")[1] for n in names}) == 1, names


def test_versions_of_one_transaction_are_brought_together_in_order() -> None:
    def event(tx_id: str, amount: float) -> AppendFeatures:
        from feature_store.records import Feature

        return AppendFeatures((Feature("c", "transactions", "tx.out.amount", tx_id, amount, 0.0),))

    a1, b1, a2, c1, a3 = event("a", 1), event("b", 1), event("a", 2), event("c", 1), event("a", 3)
    assert versions_together([a1, b1, a2, c1, a3]) == [a1, a2, a3, b1, c1]
    assert versions_together([a1, b1, c1]) == [a1, b1, c1]
