"""Property: the real store leaves a transaction's versions exactly as the in-memory store does (the oracle of
the Kafka drills), whatever batches they come in: the last version that changed anything wins, a corrected
direction included, and a batch holding a version and its correction gives what two writes give."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.client import FeatureStore
from feature_store.fake import InMemoryFeatureStore
from tests.transaction_versions import apply_in_batches, batches, versions


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_store_leaves_what_the_reference_leaves(
    runner_store: tuple[asyncio.Runner, FeatureStore], data: st.DataObject
) -> None:
    runner, store = runner_store
    subject = f"sup-{uuid.uuid4().hex[:8]}"
    events = data.draw(versions(subject))
    split = batches(data.draw, events)
    reference = InMemoryFeatureStore()
    apply_in_batches(runner, reference, [[e] for e in events])  # one write per event: the plain meaning
    apply_in_batches(runner, store, split)
    stored = {(r.object, r.name): r.value for r in runner.run(store.get_features(subject))}
    assert stored == {(f.object, f.name): f.value for f in reference.features.values()}
