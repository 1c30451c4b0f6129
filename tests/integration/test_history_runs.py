"""The client data history keeps, of each run of equal versions of a fact, only the first and the last
(lua/history.lua), against a real storage:
- versions sent in time order (a producer resending a client's profile) read exactly as the whole history
  would: `last` and `changes` at every time, with at most two rows a run;
- in any arrival order, the newest value stays exact, `changes` never counts more than happened, nothing is
  stored that was not sent, and the in-memory stand-in keeps the same rows as the store."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.settings import Settings
from feature_store.client import FeatureStore
from feature_store.fake import InMemoryFeatureStore
from feature_store.records import Feature, Value
from feature_store.specs import AggregateSpec
from tests.integration.test_aggregate_property import LATER, reference

SOURCE, NAME, DAY = "client_history", "history.profile.region", 86400.0
Version = tuple[float, Value]

# versions a day apart at most 40 days in, values from a few regions (runs of equal values are common)
versions_strategy = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(["kazan", "ufa", "perm"])),
    min_size=1,
    max_size=25,
    unique_by=lambda v: v[0],
).map(lambda vs: [(LATER + day * DAY, value) for day, value in vs])


def _feature(subject: str, version: Version) -> Feature:
    at, value = version
    return Feature(subject, SOURCE, NAME, f"v@{at:.6f}", value, at, expires_at=at + 3650 * DAY)


def _send(runner: asyncio.Runner, store: FeatureStore, subject: str, batches: list[list[Version]]) -> set[Version]:
    """Each batch in one write, to the store and to the stand-in; the rows both keep (they must agree)."""
    fake = InMemoryFeatureStore()
    for batch in batches:
        runner.run(store.put_features([_feature(subject, v) for v in batch]))
        runner.run(fake.put_features([_feature(subject, v) for v in batch]))
    stored = {(f.time_use, f.value) for f in runner.run(store.get_features(subject, name=NAME))}
    assert stored == {(at, value) for _, _, _, value, at in fake.snapshot(subject)}
    return stored


def _run_edges(versions: list[Version]) -> set[Version]:
    """The first and the last version of each run of equal values, in time order."""
    ordered = sorted(versions)
    return {
        v
        for i, v in enumerate(ordered)
        if i == 0 or i == len(ordered) - 1 or ordered[i - 1][1] != v[1] or ordered[i + 1][1] != v[1]
    }


def _specs() -> list[AggregateSpec]:
    return [AggregateSpec("last", NAME, 0.0)] + [AggregateSpec("changes", NAME, w) for w in (0.0, DAY, 7 * DAY)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(versions=versions_strategy, batch=st.integers(1, 30), resent=st.booleans())
def test_versions_in_time_order_keep_each_runs_edges_and_read_as_the_whole_history(
    runner_store: tuple[asyncio.Runner, FeatureStore], versions: list[Version], batch: int, resent: bool
) -> None:
    runner, store = runner_store
    subject = f"hist-{uuid.uuid4().hex[:10]}"
    ordered = sorted(versions)
    sent = [v for v in ordered for _ in range(2 if resent else 1)]  # a redelivery right after each
    stored = _send(runner, store, subject, [sent[i : i + batch] for i in range(0, len(sent), batch)])
    assert stored == _run_edges(ordered)

    times = sorted({at + offset for at, _ in ordered for offset in (-1.0, 0.0, 0.5 * DAY)})
    every = [(NAME, at, value) for at, value in ordered]
    got = runner.run(store.aggregate_at(subject, _specs(), times))
    for now, answer in zip(times, got, strict=True):
        assert answer == [reference(every, spec, now) for spec in _specs()], now


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), versions=versions_strategy)
def test_versions_in_any_order_keep_the_newest_value_and_never_invent_changes(
    runner_store: tuple[asyncio.Runner, FeatureStore], data: st.DataObject, versions: list[Version]
) -> None:
    runner, store = runner_store
    subject = f"hist-any-{uuid.uuid4().hex[:10]}"
    arrival = data.draw(st.permutations(versions))
    stored = _send(runner, store, subject, [[v] for v in arrival])
    assert stored <= set(versions) and max(stored) == max(versions) and min(stored) == min(versions)

    every = [(NAME, at, value) for at, value in versions]
    end = max(versions)[0] + DAY
    (answer,) = runner.run(
        store.aggregate_at(subject, [AggregateSpec("last", NAME, 0.0), AggregateSpec("changes", NAME, 0.0)], [end])
    )
    assert answer[0] == reference(every, AggregateSpec("last", NAME, 0.0), end)
    assert answer[1] <= reference(every, AggregateSpec("changes", NAME, 0.0), end)  # type: ignore[operator]


def test_a_year_of_daily_resends_of_one_profile_keeps_two_rows(
    runner_store: tuple[asyncio.Runner, FeatureStore],
) -> None:
    runner, store = runner_store
    subject = f"hist-daily-{uuid.uuid4().hex[:10]}"
    daily = [(LATER + day * DAY, "kazan") for day in range(365)]
    moved = [(LATER + 365 * DAY, "perm")]
    stored = _send(runner, store, subject, [daily[i : i + 50] for i in range(0, 365, 50)] + [moved])
    assert stored == {daily[0], daily[-1], moved[0]}
    (answer,) = runner.run(store.aggregate_at(subject, [AggregateSpec("changes", NAME, 30 * DAY)], [LATER + 366 * DAY]))
    assert answer == [1]


def test_a_subject_at_its_cap_refuses_a_version_without_dropping_its_neighbour(
    runner_store: tuple[asyncio.Runner, FeatureStore], settings: Settings
) -> None:
    """The fold drops a row only for a version that will be stored: at the cap the version is refused and the
    run's last kept version stays."""
    runner, store = runner_store
    subject = f"hist-cap-{uuid.uuid4().hex[:10]}"
    cap = settings.store.max_features_per_subject
    runner.run(store.put_features([_feature(subject, (LATER + day * DAY, "kazan")) for day in range(2)]))
    filler = [
        Feature(subject, "transactions", "tx.in.amount", f"t{i}", 1.0, LATER, expires_at=LATER + DAY)
        for i in range(cap - 2)
    ]
    assert runner.run(store.put_features(filler)).written == cap - 2
    refused = runner.run(store.put_features([_feature(subject, (LATER + 2 * DAY, "kazan"))]))
    assert [code for _, code in refused.refused] == ["SUBJECT_TOO_FAT"]
    kept = {f.time_use for f in runner.run(store.get_features(subject, name=NAME))}
    assert kept == {LATER, LATER + DAY}
