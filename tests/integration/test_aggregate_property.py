"""Property: the storage's Lua aggregates equal a plain-Python reference on random data, for every function
(`changes` included: versions equal to the one before do not count) and at the window edges (a window covers
now - window < time_use <= now)."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import uuid
from typing import Any

import asynctnt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deploy.settings import Settings
from feature_store.client import FeatureStore, StoreError
from feature_store.fake import value_order
from feature_store.records import Feature, Value
from feature_store.specs import FUNCTIONS, AggregateSpec

NOW = 1_750_000_000.0
LATER = 2_500_000_000.0  # 2049: rows that expire around it are not swept away during a test
WINDOWS = [0.0, 60.0, 3600.0, 86400.0, 30 * 86400.0]
NAMES = ["a", "b"]


def reference(rows: list[tuple[str, float, Value]], spec: AggregateSpec, now: float) -> Value | None:
    lo = now - spec.window_s if spec.window_s > 0 else -math.inf
    if spec.fn == "changes":  # each version in the window against the one before it, wherever that one is
        versions = sorted(((t, v) for name, t, v in rows if name == spec.feature and t <= now), key=lambda p: p[0])
        return sum(
            1 for before, (t, v) in itertools.pairwise(versions) if t > lo and value_order(v) != value_order(before[1])
        )  # value_order: true is not 1, as in the store
    picked = sorted(((t, v) for name, t, v in rows if name == spec.feature and lo < t <= now), key=lambda p: p[0])
    if spec.fn == "count":
        return len(picked)
    if spec.fn == "last":
        return picked[-1][1] if picked else None
    numbers = [v for _, v in picked if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None  # sum, min, max and avg read numbers only
    return {"sum": sum, "min": min, "max": max, "avg": lambda xs: sum(xs) / len(xs)}[spec.fn](numbers)


# time_use offsets chosen to hit the edges: exactly now, exactly now - window, just inside/outside, future.
edge_offsets = st.sampled_from(
    [0.0, -60.0, -3600.0, -86400.0, -30 * 86400.0, 1.0, 0.5, -59.5, -60.5, -3599.0, -86401.0, -30 * 86400.0 + 1]
)
offsets = st.one_of(edge_offsets, st.floats(-40 * 86400.0, 3600.0, allow_nan=False))
# a few repeated values, so that `changes` meets versions equal to the one before, and values of other types
# (a string fact, a flag: `true` must not equal 1)
values = st.one_of(
    st.sampled_from([1.0, 2.0, 1, "kazan", "ufa", True, False]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
rows_strategy = st.lists(
    st.tuples(st.sampled_from(NAMES), offsets, values),
    max_size=60,
)
specs_strategy = st.lists(
    st.builds(
        AggregateSpec,
        fn=st.sampled_from(FUNCTIONS),
        feature=st.sampled_from([*NAMES, "missing"]),
        window_s=st.sampled_from(WINDOWS),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, specs=specs_strategy)
# `changes` over one name with several windows, a version exactly on each window's edge (outside it): the
# versions are sorted once and each window counts from its edge on
@example(
    rows=[("a", -86400.0, 1.0), ("a", -3600.0, 2.0), ("a", -60.0, 1.0), ("a", 0.0, 2.0), ("a", -30.0, 2.0)],
    specs=[AggregateSpec("changes", "a", w) for w in (60.0, 3600.0, 86400.0, 30 * 86400.0, 0.0)],
)
def test_lua_aggregates_equal_python_reference(
    runner_store: tuple[asyncio.Runner, FeatureStore],
    rows: list[tuple[str, float, Value]],
    specs: list[AggregateSpec],
) -> None:
    runner, store = runner_store
    subject = f"prop-{uuid.uuid4().hex[:10]}"
    # distinct time_use per name keeps "last" well defined (ties have no order in either implementation)
    seen: set[tuple[str, float]] = set()
    unique_rows = []
    for name, offset, value in rows:  # distinct after the addition: NOW + 1e-308 is NOW
        if (name, NOW + offset) not in seen:
            seen.add((name, NOW + offset))
            unique_rows.append((name, NOW + offset, value))
    features = [
        Feature(subject, "transactions", name, f"o{i}", value, t, expires_at=NOW + 10 * 365 * 86400)
        for i, (name, t, value) in enumerate(unique_rows)
    ]
    runner.run(store.put_features(features))
    got = runner.run(store.aggregate(subject, specs, NOW))
    for spec, value in zip(specs, got, strict=True):
        _check(reference(unique_rows, spec, NOW), value, spec)


def _check(expected: Value | None, value: Value | None, spec: AggregateSpec) -> None:
    if expected is None:
        assert value is None, spec
    elif isinstance(expected, str | bool):
        assert value == expected and type(value) is type(expected), spec
    else:
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-6), spec


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.sampled_from(NAMES), offsets, values, offsets), max_size=60),
    specs=specs_strategy,
    times=st.lists(edge_offsets, min_size=1, max_size=6),
)
def test_aggregates_at_several_times_equal_the_reference_at_each(
    runner_store: tuple[asyncio.Runner, FeatureStore],
    rows: list[tuple[str, float, Value, float]],
    specs: list[AggregateSpec],
    times: list[float],
) -> None:
    """`aggregate_at` (training's call: one scan folded into every time) against the reference at each time,
    with rows that expire between the times: each time sees exactly the rows visible then. The times lie in the
    future (``LATER``): the store's expiry sweep deletes rows whose expiry has passed on the wall clock, which
    would race with the read."""
    runner, store = runner_store
    subject = f"prop-at-{uuid.uuid4().hex[:10]}"
    seen: set[tuple[str, float]] = set()
    unique_rows = []
    for name, offset, value, lives in rows:
        if (name, LATER + offset) not in seen:
            seen.add((name, LATER + offset))
            unique_rows.append((name, LATER + offset, value, LATER + offset + abs(lives) + 1.0))
    features = [
        Feature(subject, "transactions", name, f"o{i}", value, t, expires_at=expires)
        for i, (name, t, value, expires) in enumerate(unique_rows)
    ]
    runner.run(store.put_features(features))
    at = [LATER + offset for offset in times]
    got = runner.run(store.aggregate_at(subject, specs, at))
    assert len(got) == len(at)
    for now, answer in zip(at, got, strict=True):
        visible = [(name, t, value) for name, t, value, expires in unique_rows if expires > now]
        for spec, value in zip(specs, answer, strict=True):
            _check(reference(visible, spec, now), value, spec)


def test_aggregate_at_refuses_no_times_and_too_many(runner_store: tuple[asyncio.Runner, FeatureStore]) -> None:
    runner, store = runner_store
    spec = [AggregateSpec("count", "a", 0.0)]
    assert runner.run(store.aggregate_at("prop-none", spec, [])) == []  # nothing asked, nothing sent
    many = [NOW + i for i in range(200)]  # the client splits them into calls the store accepts
    assert runner.run(store.aggregate_at("prop-none", spec, many)) == [[0]] * 200
    with pytest.raises(StoreError, match="between 1 and 64 times"):
        runner.run(
            store.call_routed("prop-none", "aggregate_at", ["prop-none", many, [s.wire for s in spec]], write=False)
        )


def test_a_large_client_read_in_steps_equals_the_reference_while_its_rows_change_around_the_read(
    runner_store: tuple[asyncio.Runner, FeatureStore],
) -> None:
    """A client of more rows than one step (lua/aggregate.lua `SCAN_STEP`, 1,000) is read in steps with a yield
    between them, each step going on after the last key read. Meanwhile rows of the same client are written
    into the very key ranges being read (under a name read, but later than the read's time, so invisible; and
    under a name not read): the answer must still count each visible row once."""
    runner, store = runner_store
    subject = f"prop-large-{uuid.uuid4().hex[:10]}"
    rng = random.Random(20261207)
    rows = [(NAMES[i % 2], NOW - rng.uniform(0, 40 * 86400), float(rng.randint(-500, 500))) for i in range(6_100)]
    features = [
        Feature(subject, "transactions", name, f"o{i:05d}", value, t, expires_at=NOW + 10 * 365 * 86400)
        for i, (name, t, value) in enumerate(rows)
    ]
    runner.run(store.put_features(features))
    specs = [AggregateSpec(fn, name, w) for fn in FUNCTIONS for name in NAMES for w in (0.0, 86400.0, 30 * 86400.0)]

    async def write_around(rounds: int) -> None:
        for r in range(rounds):
            await store.put_features(
                [Feature(subject, "transactions", "a", f"o{r * 7 + k:05d}x", 1e6, NOW + 3600) for k in range(7)]
                + [Feature(subject, "transactions", "c", f"o{r:05d}", 1.0, NOW - 10)]
            )

    async def reads_while_writing() -> list[list[Value | None]]:
        writer = asyncio.create_task(write_around(40))
        answers = [await store.aggregate(subject, specs, NOW) for _ in range(8)]
        await writer
        return answers

    for got in runner.run(reads_while_writing()):
        for spec, value in zip(specs, got, strict=True):
            _check(reference(rows, spec, NOW), value, spec)


def test_a_large_clients_read_never_carries_a_status_generation_newer_than_its_facts(
    runner_store: tuple[asyncio.Runner, FeatureStore],
) -> None:
    """A read that yields between steps may miss an application written meanwhile; the status generation it
    answers with must then not be the current one (lua/client_read.lua takes it before the read, and a clearing
    during the read makes it unsettled), or the manager's conditional cache put would keep an answer that offers
    the product applied for. The client's applications are many, so their own scan yields; each new one sorts
    before them all, so one that lands during the read is always missed."""
    runner, store = runner_store
    subject = f"prop-gen-{uuid.uuid4().hex[:10]}"
    rng = random.Random(7)
    old = [
        Feature(subject, "applications", "application.status", f"p{i:05d}", "sent", NOW - i, expires_at=LATER)
        for i in range(12_000)
    ]
    runner.run(store.put_features(old))
    bucket = store.bucket_id_for(subject)
    rs = store.replicaset_of_bucket(bucket)
    wire = [AggregateSpec("count", "application.status").wire]

    async def read() -> dict[str, Any]:
        return await rs.call("client_read", [bucket, subject, NOW, wire, False, False], write=True, timeout=5)

    async def races() -> list[tuple[int, dict[str, Any], str]]:
        outcomes = []
        for i in range(20):
            reading = asyncio.create_task(read())
            await asyncio.sleep(rng.uniform(0, 0.01))
            new = Feature(subject, "applications", "application.status", f"a{i:03d}", "sent", NOW, expires_at=LATER)
            await store.put_features([new])
            outcomes.append((len(old) + i + 1, await reading, (await read())["status_gen"]))
        return outcomes

    outcomes = runner.run(races())
    missed = [(answer, gen_after) for applications, answer, gen_after in outcomes if answer["values"][0] < applications]
    assert missed, "no read missed the application written during it: the race was not met"
    for answer, gen_after in missed:
        assert answer["status_gen"] != gen_after, answer


UNDONE_CLEARING = """
local subject, bucket, now, wire = ...
local cache, fiber = require('cache'), require('fiber')
local before = box.space.rec_cache:get(subject)
local answer
local reader = fiber.new(function()
    answer = require('client_read').client_read(bucket, subject, now, wire, false, false)
end)
reader:set_joinable(true)
fiber.yield()  -- the read starts, and yields after its first step
local reading = reader:status() ~= 'dead'
cache.invalidate(subject)  -- a clearing whose transaction waits for the WAL while the read goes on ...
if before ~= nil then  -- ... and fails there: its rollback puts the client's gen back
    box.space.rec_cache:replace(before)
else
    box.space.rec_cache:delete(subject)
end
reader:join()
return reading, answer.status_gen, cache.gen_of(subject)
"""


def test_a_read_during_a_clearing_that_is_rolled_back_answers_with_a_generation_no_put_matches(
    runner_store: tuple[asyncio.Runner, FeatureStore], settings: Settings
) -> None:
    """Without MVCC a read sees the rows of a transaction still waiting for the WAL. Should that write fail, its
    rollback makes the generation taken before the read current again: the answer, built on rows that never
    were, would be cached. A clearing during the read marks it unsettled whatever the transaction's fate
    (lua/cache.lua `watch`). The WAL failure is played by the rollback's own effect on the generation."""
    runner, store = runner_store
    subject = f"prop-undone-{uuid.uuid4().hex[:10]}"
    runner.run(
        store.put_features(
            [Feature(subject, "transactions", "a", f"o{i:05d}", 1.0, NOW - i, expires_at=LATER) for i in range(5_000)]
        )
    )
    bucket = store.bucket_id_for(subject)
    rs = store.replicaset_of_bucket(bucket)
    master = next(i.spec for i in rs.instances if i.spec.name == rs.master_name)  # known since the put

    async def undone() -> list[Any]:
        conn = asynctnt.Connection(
            host=master.host, port=master.port, username=settings.store.user, password=settings.store.password
        )
        await conn.connect()
        try:
            wire = [AggregateSpec("sum", "a").wire]
            return list((await conn.eval(UNDONE_CLEARING, [subject, bucket, NOW, wire], timeout=10)).body)
        finally:
            await conn.disconnect()

    reading, answered_gen, gen_now = runner.run(undone())
    assert reading, "the read did not yield: the client is too small to be read in steps"
    assert answered_gen != gen_now  # a put with it is refused
