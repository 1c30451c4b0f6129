"""Attacks on store layout 2 (interned names, natural primary key, temporary subject counts, expiry walk).

Tests whose docstring says "Regression" reproduce a defect a review found (and that was fixed); the others pin
guarantees the layout must keep."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import asynctnt
import pytest

from deploy import processes
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.events import ApplicationEvent, ClientEvent, ProductEvent, TransactionEvent
from extractors.extract import ExtractionConfig, extract
from extractors.ops import apply_ops
from feature_store.client import FeatureStore
from feature_store.errors import StoreInternalError, SubjectDenied, TooManyNames
from feature_store.fake import InMemoryFeatureStore
from feature_store.rebalance import move_bucket
from feature_store.records import Feature
from feature_store.specs import AggregateSpec
from tests.conftest import private_settings

FAR = 4_000_000_000.0  # expires_at of rows that must not expire during the test


def _subject_on(store: FeatureStore, rs_id: int, prefix: str) -> str:
    return next(
        f"{prefix}-{i}"
        for i in range(100_000)
        if store.replicaset_of_bucket(store.bucket_id_for(f"{prefix}-{i}")).id == rs_id
    )


async def _master(cluster: StoreCluster, settings: Settings, rs_id: int) -> asynctnt.Connection:
    spec = cluster.instance(cluster.master_name(cluster.topology[rs_id - 1]))
    conn = asynctnt.Connection(
        host=spec.host, port=spec.port, username=settings.store.user, password=settings.store.password
    )
    await conn.connect()
    return conn


async def _eval(cluster: StoreCluster, settings: Settings, rs_id: int, code: str, args: list[Any]) -> list[Any]:
    conn = await _master(cluster, settings, rs_id)
    try:
        return list(await conn.eval(code, args))
    finally:
        await conn.disconnect()


CACHE_STATE = """
local kind, text = ...
return require('dict').find(kind, text), box.space.dictionary:get({kind, text}) ~= nil
"""


# ---- dictionary: an id cached for a name whose insert was rolled back -------------------------------------

# Two requests as iproto runs them, each in its own fiber: A interns a new name and yields in box.commit
# (waiting for its WAL write); B, run meanwhile, interns another new name and then fails (rolled back).
INTERLEAVE = """
local rows_a, rows_b = ...
local fiber = require('fiber')
local done = fiber.channel(1)
local a_finished = false
fiber.create(function()
    local res, err = rtrec.put_features(rows_a)
    a_finished = true
    done:put({res ~= nil, err == nil})
end)
local a_finished_before_b = a_finished
local res_b, err_b = rtrec.put_features(rows_b)
local a = done:get(10)
return a_finished_before_b, res_b == nil and err_b ~= nil, a ~= nil and a[1] and a[2]
"""


async def test_a_rolled_back_intern_during_another_commit_never_reaches_the_name_cache(
    store: FeatureStore, cluster: StoreCluster, settings: Settings, uid: str
) -> None:
    """Regression (lua/dict.lua intern): `created` is one module-wide table. B interns while A's commit waits for the
    WAL, so B's entry joins A's table and B registers no triggers of its own; B rolls back, A commits, and A's
    on_commit caches B's never-stored id. The next new name gets the same id: two names, one id."""
    now = time.time()
    a_subject, b_subject, x_subject = (_subject_on(store, 1, f"{uid}-{tag}") for tag in ("a", "b", "x"))
    n_a, n_b, n_c = f"{uid}.committed", f"{uid}.rolled_back", f"{uid}.next_new"
    row_a = [store.bucket_id_for(a_subject), a_subject, "transactions", n_a, "o1", 1, now, FAR]
    # a value that is not a scalar: validate() lets it through, the insert throws, the transaction rolls back
    row_b = [store.bucket_id_for(b_subject), b_subject, "transactions", n_b, "o1", [1, 2], now, FAR]
    a_pending, b_failed, a_ok = await _eval(cluster, settings, 1, INTERLEAVE, [[row_a], [row_b]])
    assert (a_pending, b_failed, a_ok) == (False, True, True)  # the interleaving happened as described

    cached_b, stored_b = await _eval(cluster, settings, 1, CACHE_STATE, ["name", n_b])
    # consequences through the public client: n_b reuses the phantom id, the next new name gets it too
    await store.put_features([Feature(x_subject, "transactions", n_b, "ob", 5.0, now, FAR)])
    await store.put_features([Feature(x_subject, "transactions", n_c, "oc", 7.0, now, FAR)])
    names = sorted((r.name, r.object) for r in await store.get_features(x_subject))
    counts = await store.aggregate(x_subject, [AggregateSpec("count", n_b), AggregateSpec("count", n_c)], now + 1)
    assert (cached_b, stored_b) == (None, False), f"phantom id {cached_b} cached for a name never stored"
    assert names == sorted([(n_b, "ob"), (n_c, "oc")])
    assert counts == [1, 1]


async def test_a_denied_replace_racing_an_ingest_batch_leaves_names_distinct(
    store: FeatureStore, cluster: StoreCluster, settings: Settings, uid: str
) -> None:
    """Regression, same defect reached through the public client only: an ingest batch introducing a name, and at the
    same moment a client-data replace that is refused (denied subject) introducing another one."""
    now = time.time()
    rs_id = store.replicaset_of_bucket(store.bucket_id_for("BANK")).id
    poisoned = None
    for attempt in range(6):
        subject = _subject_on(store, rs_id, f"{uid}-ing{attempt}")
        fresh = f"{uid}.batch{attempt}"
        refused = f"{uid}.refused{attempt}"
        batch = [Feature(subject, "transactions", fresh, f"t{attempt}-{i}", 1.0, now, now + 5) for i in range(5000)]

        async def replace(name: str = refused) -> None:
            with pytest.raises(SubjectDenied):
                await store.replace_source(
                    "BANK", "transactions", now, [Feature("BANK", "transactions", name, "b", 1, now)]
                )

        ingest = asyncio.create_task(store.put_features(batch))
        for _ in range(3 + attempt):  # let the batch go out first: its transaction runs, then waits for the WAL
            await asyncio.sleep(0)
        await asyncio.sleep(0.002 * attempt)
        await replace()
        await ingest
        cached, stored = await _eval(cluster, settings, rs_id, CACHE_STATE, ["name", refused])
        if cached is not None and not stored:
            poisoned = (refused, cached)
            break
    assert poisoned is None, f"name {poisoned[0]!r} cached with id {poisoned[1]} that no dictionary tuple backs"


async def test_a_rolled_back_intern_alone_leaves_no_trace(
    store: FeatureStore, cluster: StoreCluster, settings: Settings, uid: str
) -> None:
    now = time.time()
    subject = _subject_on(store, 1, f"{uid}-rb")
    name, other = f"{uid}.rb", f"{uid}.rb2"
    with pytest.raises(StoreInternalError):
        await store.put_features([Feature(subject, "transactions", name, "o1", [1, 2], now, FAR)])  # type: ignore[arg-type]
    assert await _eval(cluster, settings, 1, CACHE_STATE, ["name", name]) == [None, False]
    await store.put_features([Feature(subject, "transactions", name, "o1", 1.0, now, FAR)])
    await store.put_features([Feature(subject, "transactions", other, "o2", 2.0, now, FAR)])
    assert sorted(r.name for r in await store.get_features(subject)) == sorted([name, other])


# ---- subject counts (temporary space) --------------------------------------------------------------------


def _rows(subject: str, start: int, stop: int, expires_at: float = FAR) -> list[Feature]:
    now = time.time()
    return [
        Feature(subject, "transactions", "tx.out.amount", f"o{i}", float(i), now, expires_at)
        for i in range(start, stop)
    ]


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_cap_follows_expiry_deletes_and_restarts(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, uid: str
) -> None:
    s = private_settings(settings, tmp_path_factory.mktemp("cap"), replicasets=1, max_features_per_subject=10)
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        subject = f"{uid}-cap"
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            assert (await store.put_features(_rows(subject, 0, 10, time.time() + 2))).written == 10
            over = await store.put_features(_rows(subject, 10, 11))
            assert [code for _, code in over.refused] == ["SUBJECT_TOO_FAT"]

            async def expired() -> bool:
                return not await store.get_features(subject)

            await _wait(expired, 20, "the expiry fiber")
            again = await store.put_features(_rows(subject, 20, 30))  # the cached count followed the expiry
            assert (again.written, again.refused) == (10, [])
        cluster.stop()
        cluster = StoreCluster(s)
        await cluster.start()  # subject_counts is empty again
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            assert await store.delete_object(subject, "o20") == 1  # a delete of an uncached subject
            after = await store.put_features(_rows(subject, 40, 42))
            assert after.written == 1 and [code for _, code in after.refused] == ["SUBJECT_TOO_FAT"]
            assert len(await store.get_features(subject)) == 10
    finally:
        StoreCluster(s).stop()


@contextlib.asynccontextmanager
async def _one_replicaset(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, name: str, **store: Any
) -> AsyncIterator[FeatureStore]:
    """A private cluster of one replica set with the given store settings, and a client of it; stopped after."""
    s = private_settings(settings, tmp_path_factory.mktemp(name), replicasets=1, **store)
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        async with FeatureStore(s.store, topology=cluster.topology) as client:
            yield client
    finally:
        StoreCluster(s).stop()


async def test_new_feature_names_stop_at_the_name_budget_and_known_ones_still_pass(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, uid: str
) -> None:
    """A producer sending a new product id on every event interned a name per event, without bound; deleting or
    correcting a transaction looks it up under every name, in a transaction that cannot yield."""
    subject = f"{uid}-names"
    async with _one_replicaset(settings, tmp_path_factory, "names", max_names=100) as store:
        rows = [Feature(subject, "transactions", f"tx.out.x{i}", f"t{i}", 1.8e9, 1.8e9, FAR) for i in range(150)]
        result = await store.put_features(rows)
        assert result.written == 100 and {code for _, code in result.refused} == {"TOO_MANY_NAMES"}
        assert len(result.refused) == 50
        again = await store.put_features([*rows[:3], *rows[120:121]])  # known names pass, new ones do not
        assert again.unchanged == 3 and [code for _, code in again.refused] == ["TOO_MANY_NAMES"]
        event = ApplicationEvent(
            application_id="a2", client_id=subject, product="brand_new", status="submitted", ts=1.8e9
        )
        assert not (await apply_ops(store, extract(event, ExtractionConfig(), origin=5))).refused
        # applications and product events keep 500 names more (a new product after the budget is used up)
        spam = [Feature(subject, "applications", f"app.q{i}.submitted", "a1", 1.8e9, 1.8e9, FAR) for i in range(500)]
        over = await store.put_features(spam)
        assert over.written == 499 and [code for _, code in over.refused] == ["TOO_MANY_NAMES"]
        tx = {"tx_id": "t-new", "client_id": subject, "ts": 1.8e9, "amount": 5, "currency": "RUB", "direction": "out"}
        refused = await apply_ops(
            store,
            extract(TransactionEvent(**tx, channel="kiosk"), ExtractionConfig(channels=frozenset({"kiosk"})), origin=5),
        )
        assert "TOO_MANY_NAMES" in refused.refused[5]  # the consumer's dead letter says why
        with pytest.raises(TooManyNames):
            await store.replace_source(
                subject,
                "client_profile",
                2.0,
                [Feature(subject, "client_profile", "profile.colour", subject, "red", 1.8e9)],
            )


async def test_a_client_at_the_cap_still_has_his_applications_and_openings_stored(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, uid: str
) -> None:
    """Transactions filled the client's cap; the application that followed was refused (SUBJECT_TOO_FAT), and
    the answers, which learn what a client applied for from those rows, offered him the product he had just
    applied for. Rows of what a client holds or applied for go past the cap, within a reserve."""
    subject = f"{uid}-held"
    async with _one_replicaset(settings, tmp_path_factory, "capheld", max_features_per_subject=10) as store:
        assert (await store.put_features(_rows(subject, 0, 10))).written == 10  # at the cap
        events = [
            ApplicationEvent(application_id="a1", client_id=subject, product="deposit", status="submitted", ts=1.8e9),
            ProductEvent(client_id=subject, product="credit_card", action="opened", ts=1.8e9),
        ]
        for event in events:
            result = await apply_ops(store, extract(event, ExtractionConfig(), origin=0))
            assert not result.refused, result.refused
        names = {f.name for f in await store.get_features(subject)}
        assert {"app.deposit.submitted", "product.credit_card.opened"} <= names
        assert [code for _, code in (await store.put_features(_rows(subject, 10, 11))).refused] == [
            "SUBJECT_TOO_FAT"
        ]  # transactions are still capped
        reserve = [
            Feature(subject, "applications", "app.deposit.submitted", f"r{i}", 1.8e9, 1.8e9, FAR) for i in range(1000)
        ]
        over = await store.put_features(reserve)
        assert over.written == 998 and [code for _, code in over.refused] == ["SUBJECT_TOO_FAT"] * 2


async def test_a_client_event_at_the_cap_replaces_the_profile_and_dead_letters_for_its_history(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, uid: str
) -> None:
    """A subject at its row cap has no room for a new version's history rows. The newest profile still
    replaces the old one (it reuses its rows and decides eligibility); the event is reported refused with the
    store's reason, so the consumer sends it to the dead-letter topic and a later replay can add the history."""
    s = private_settings(settings, tmp_path_factory.mktemp("capclient"), replicasets=1, max_features_per_subject=10)
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        subject = f"{uid}-capc"
        event = {"client_id": subject, "segment": "retail", "region": "kazan", "birth_date": "1980-01-01"}
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            first = extract(ClientEvent.model_validate({**event, "ts": 1_700_000_000}), ExtractionConfig(), origin=0)
            assert not (await apply_ops(store, first)).refused  # 3 profile rows + 3 history rows
            assert (await store.put_features(_rows(subject, 0, 4))).written == 4  # now at the cap of 10
            moved = {**event, "region": "ufa", "ts": 1_700_100_000}
            second = extract(ClientEvent.model_validate(moved), ExtractionConfig(), origin=7)
            result = await apply_ops(store, second)
            assert "SUBJECT_TOO_FAT" in result.refused[7]
            now = 1_700_100_001
            region = await store.aggregate(subject, [AggregateSpec("last", "profile.region")], now)
            assert region == ["ufa"] and result.replaced == 2  # the profile and the (empty) registry
    finally:
        StoreCluster(s).stop()


async def test_a_master_back_after_a_failback_counts_afresh_for_the_cap(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, uid: str
) -> None:
    """Regression (lua/counts.lua, temporary subject_counts): a master demoted by a planned switchover keeps its
    cached counts while it replicates the new master's writes (replication does not go through counts.note).
    Promoted again (a failback), it caps with the counts it had: here it lets a subject grow past the cap."""
    s = private_settings(settings, tmp_path_factory.mktemp("failback"), replicasets=1, max_features_per_subject=10)
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        subject = f"{uid}-fb"
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            first = cluster.master_name(cluster.topology[0])
            assert (await store.put_features(_rows(subject, 0, 6))).written == 6  # `first` caches 6
            await cluster.wait_synced()
            switched = await cluster.failover(1)  # planned: `first` stays up, read-only
            assert switched["old_master_alive"]
            second = switched["new_master"]
            filled = await store.put_features(_rows(subject, 6, 10))  # the cap is reached on `second`
            assert (filled.written, filled.refused) == (4, [])
            await cluster.wait_synced()
            third = next(i.name for i in cluster.topology[0].instances if i.name not in (first, second))
            cluster.kill(third, signal.SIGKILL)  # leaves `first` as the only candidate of the failback

            async def gone() -> bool:
                return not processes.is_alive(processes.read_pid(cluster.pid_path(cluster.instance(third))))

            await _wait(gone, 10, "the third instance to die")
            back = await cluster.failover(1)
            assert back["new_master"] == first
            more = await store.put_features(_rows(subject, 10, 14))
            stored = len(await store.get_features(subject))
        assert (stored, more.written) == (10, 0), f"cap 10 exceeded: {stored} stored"
    finally:
        StoreCluster(s).stop()


# ---- replace_source ----------------------------------------------------------------------------------------


async def test_replace_follows_changing_names_and_removes_rows_stored_before_any_replace(
    store: FeatureStore, uid: str
) -> None:
    subject, src, t = f"{uid}-rn", f"{uid}.src", time.time()

    def f(name: str, value: Any, obj: str | None = None) -> Feature:
        return Feature(subject, src, f"{uid}.{name}", obj or subject, value, t, FAR)

    await store.put_features([f("legacy", 1.0), f("a", 0.0, "other-object")])  # no replace recorded names yet
    first = await store.replace_source(subject, src, 1.0, [f("a", "x"), f("b", "y")])
    assert first.applied and first.deleted == 2
    second = await store.replace_source(subject, src, 2.0, [f("c", "z")])
    assert second.deleted == 2
    third = await store.replace_source(subject, src, 3.0, [f("a", "x2"), f("a", "x3", "o2")])
    assert third.deleted == 1
    rows = await store.get_features(subject)
    assert sorted((r.name, r.object, r.value) for r in rows) == sorted(
        [(f"{uid}.a", "o2", "x3"), (f"{uid}.a", subject, "x2")]
    )
    empty = await store.replace_source(subject, src, 4.0, [])
    assert empty.deleted == 2 and await store.get_features(subject) == []


async def test_replace_removes_every_row_of_the_source_whoever_wrote_it(store: FeatureStore, uid: str) -> None:
    """Regression (lua/replace.lua M.stored): once a replace recorded names, the next one looks only at those names.
    A row of the same source stored by put_features under another name survives every later replace, so the
    source no longer becomes "exactly the given rows" (layout 1, and the reference store, removed it)."""
    subject, src, t = f"{uid}-rs", f"{uid}.src", time.time()
    keep = Feature(subject, src, "profile.segment", subject, "retail", t, FAR)
    stray = Feature(subject, src, f"{uid}.stray", subject, "old", t, FAR)
    reference = InMemoryFeatureStore()
    for target in (store, reference):
        await target.replace_source(subject, src, 1.0, [keep])
        await target.put_features([stray])
        await target.replace_source(subject, src, 2.0, [keep])
    rows = {(r.name, r.value) for r in await store.get_features(subject)}
    assert rows == {(f.name, f.value) for _, f in reference.features.items() if f.subject == subject}
    assert rows == {("profile.segment", "retail")}


# ---- bucket moves between replica sets whose dictionaries differ --------------------------------------------


async def test_a_bucket_moves_between_replicasets_with_different_name_ids(
    store: FeatureStore, cluster: StoreCluster, settings: Settings, uid: str
) -> None:
    t = time.time()
    n1, n2, src = f"{uid}.n1", f"{uid}.n2", f"{uid}.src"
    subject = _subject_on(store, 1, f"{uid}-mv")
    helper = _subject_on(store, 2, f"{uid}-h")
    # intern in opposite orders on the two replica sets
    for name in (n2, n1):
        await store.put_features([Feature(helper, src, name, "h", 0, t, FAR)])
    for name in (n1, n2):
        await store.put_features([Feature(subject, "transactions", name, f"tx-{name}", 3.5, t - 10, FAR)])
    ids = [(await _eval(cluster, settings, rs, CACHE_STATE, ["name", n]))[0] for rs in (1, 2) for n in (n1, n2)]
    assert (ids[0], ids[1]) != (ids[2], ids[3])
    await store.replace_source(
        subject,
        src,
        1.0,
        [
            Feature(subject, src, n1, subject, "a", t, FAR),
            Feature(subject, src, n2, subject, True, t, FAR),
        ],
    )
    await store.put_features([Feature(subject, "transactions", n1, "gone", 1.0, t - 5, FAR)])
    assert await store.delete_object(subject, "gone") == 1
    specs = [AggregateSpec("sum", n1), AggregateSpec("count", n2), AggregateSpec("last", n2)]
    before = sorted((r.source, r.name, r.object, r.value, r.time_use) for r in await store.get_features(subject))
    aggregates = await store.aggregate(subject, specs, t + 1)

    bucket = store.bucket_id_for(subject)
    moved = await move_bucket(store, bucket, 2)
    try:
        assert moved.records >= 4
        after = sorted((r.source, r.name, r.object, r.value, r.time_use) for r in await store.get_features(subject))
        assert after == before
        assert await store.aggregate(subject, specs, t + 1) == aggregates
        # the tombstone and the recorded version/names travelled: replace and late duplicates behave
        late = await store.put_features([Feature(subject, "transactions", n1, "gone", 1.0, t - 5, FAR)])
        assert late.tombstoned == 1
        older = await store.replace_source(subject, src, 0.5, [])
        assert not older.applied
        newer = await store.replace_source(subject, src, 2.0, [Feature(subject, src, n2, subject, False, t, FAR)])
        assert newer.applied and newer.deleted == 1
    finally:
        await move_bucket(store, bucket, 1)
    rows = sorted((r.source, r.name, r.value) for r in await store.get_features(subject))
    assert rows == sorted([("transactions", n1, 3.5), ("transactions", n2, 3.5), (src, n2, False)])


# ---- values: int/float compaction, booleans, strings, ties of `last` ----------------------------------------


async def test_whole_floats_stored_as_ints_stay_equal_for_unchanged_and_aggregates(
    store: FeatureStore, uid: str
) -> None:
    subject, t = f"{uid}-num", 1_700_000_000.0
    name = f"{uid}.v"
    assert (await store.put_features([Feature(subject, "s", name, "o", 2.0, t, FAR)])).written == 1
    again = await store.put_features([Feature(subject, "s", name, "o", 2, int(t), int(FAR))])
    assert (again.written, again.unchanged) == (0, 1)
    assert (await store.put_features([Feature(subject, "s", name, "o", 2.0, t, FAR)])).unchanged == 1
    flipped = await store.put_features([Feature(subject, "s", name, "o", True, t, FAR)])  # True is not 1 or 2
    assert flipped.written == 1
    back = await store.put_features([Feature(subject, "s", name, "o", 1, t, FAR)])
    assert back.written == 1
    await store.put_features([Feature(subject, "s", name, "p", 0.5, t - 1, FAR)])
    specs = [AggregateSpec(fn, name) for fn in ("sum", "min", "max", "avg", "last", "count")]
    assert await store.aggregate(subject, specs, t) == [1.5, 0.5, 1, 0.75, 1, 2]
    [row] = await store.get_features(subject, name=name, from_time=t, to_time=t)
    assert row.value == 1 and row.value is not True and row.time_use == t


async def test_last_of_tied_times_does_not_depend_on_object_order(store: FeatureStore, uid: str) -> None:
    """Regression (lua/aggregate.lua newer): ties of `last` go to the largest value "so the result does not depend on
    the order rows are met in", but booleans (and values of different types) never win a tie: the first row
    in object order wins. The reference store (and Python) order False < True."""
    t, name = 1_700_000_000.0, f"{uid}.flag"
    results = []
    for subject, first, second in ((f"{uid}-p", False, True), (f"{uid}-q", True, False)):
        await store.put_features(
            [
                Feature(subject, "s", name, "o1", first, t, FAR),
                Feature(subject, "s", name, "o2", second, t, FAR),
            ]
        )
        results.append((await store.aggregate(subject, [AggregateSpec("last", name)], t))[0])
    assert results == [True, True]


async def test_last_ties_of_numbers_and_strings_take_the_largest(store: FeatureStore, uid: str) -> None:
    t = 1_700_000_000.0
    for kind, values in (("n", [2, 2.5, -1]), ("s", ["b", "c", "a"])):
        subject, name = f"{uid}-{kind}", f"{uid}.{kind}"
        await store.put_features([Feature(subject, "s", name, f"o{i}", v, t, FAR) for i, v in enumerate(values)])
        await store.put_features([Feature(subject, "s", name, "older", "zzz" if kind == "s" else 99, t - 1, FAR)])
        assert (await store.aggregate(subject, [AggregateSpec("last", name)], t))[0] == max(values)


# ---- expiry walk under concurrent writes -------------------------------------------------------------------


async def test_expiry_walk_deletes_every_expired_row_while_writes_go_on(store: FeatureStore, uid: str) -> None:
    now = time.time()
    subjects = [f"{uid}-e{i:02d}" for i in range(30)]
    live: set[tuple[str, str]] = set()

    async def write(round_: int) -> None:
        batch = []
        for s in subjects:
            for j in range(40):
                obj = f"r{round_}-{j}"
                expired = j % 2 == 0
                batch.append(Feature(s, "transactions", "tx.out.amount", obj, 1.0, now, now - 1 if expired else FAR))
                if not expired:
                    live.add((s, obj))
        await store.put_features(batch)

    for round_ in range(10):  # ~12,000 rows written while the expiry fiber walks (every 0.5 s in tests)
        await write(round_)
        await asyncio.sleep(0.1)

    async def only_live() -> bool:
        found = set()
        for s in subjects:
            found |= {(s, r.object) for r in await store.get_features(s)}
        return found == live

    await _wait(only_live, 30, "expiry to leave only live rows")


# ---- subject listings --------------------------------------------------------------------------------------


async def _listed(store: FeatureStore, rs_id: int, after: str, page: int, prefix: str) -> list[str]:
    out: list[str] = []
    while True:
        answer = await store.replicasets[rs_id].call("list_subjects", [after, page], write=False)
        mine = [s for s in answer["subjects"] if s.startswith(prefix)]
        out.extend(mine)
        if len(mine) < len(answer["subjects"]) or len(answer["subjects"]) < page:
            return out
        after = answer["next_after"]


async def test_subject_listing_pages_over_prefixes_and_long_subjects(store: FeatureStore, uid: str) -> None:
    t = time.time()
    long_subject = f"{uid}-L" + "x" * 20_000
    subjects = [f"{uid}-a", f"{uid}-a\x00", f"{uid}-a-", f"{uid}-a-b", f"{uid}-b", long_subject]
    gone = f"{uid}-gone"
    long_name = f"{uid}." + "n" * 20_000
    await store.put_features(
        [Feature(s, "transactions", n, f"o{i}", 1.0, t, FAR) for s in subjects for i, n in enumerate(("m", long_name))]
        + [Feature(gone, "transactions", "m", "only", 1.0, t, FAR)]
    )
    assert await store.delete_object(gone, "only") == 1
    for page in (1, 2, 1000):
        found = []
        for rs_id in store.replicasets:
            found += await _listed(store, rs_id, uid, page, uid)
        assert sorted(found) == sorted(subjects), page
    assert (await store.aggregate(long_subject, [AggregateSpec("count", long_name)], t + 1)) == [1]
    assert {r.name for r in await store.get_features(long_subject)} == {"m", long_name}


async def test_interactions_read_status_names_from_the_dictionary(store: FeatureStore, uid: str) -> None:
    t = 1_700_000_000.0
    subject = _subject_on(store, 1, f"{uid}-int")
    p = f"{uid}p"
    await store.put_features(
        [
            Feature(subject, "products", f"product.{p}1.opened", "a", t, t, FAR),
            Feature(subject, "products", f"product.{p}2.opened", "b", t, t, FAR),
            Feature(subject, "products", f"product.{p}2.closed", "c", t + 5, t + 5, FAR),
            Feature(subject, "applications", f"app.{p}3.submitted", "d", t, t, FAR),
            # reissued: the new one opened, then the old one closed (as the serving filter: held)
            Feature(subject, "products", f"product.{p}4.opened", "e", t - 400 * 86400, t - 400 * 86400, FAR),
            Feature(subject, "products", f"product.{p}4.opened", "f", t, t, FAR),
            Feature(subject, "products", f"product.{p}4.closed", "g", t + 5, t + 5, FAR),
        ]
    )
    answer = await store.replicasets[1].call("interactions", [subject[:-1], 1000], write=False, timeout=60)
    mine = sorted(tuple(r) for r in answer["rows"] if r[0] == subject)
    assert mine == [(subject, f"{p}1", "held"), (subject, f"{p}3", "applied"), (subject, f"{p}4", "held")]


async def test_expired_rows_are_never_read_nor_capped_before_the_hourly_sweep(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, uid: str
) -> None:
    """The feature walk runs once per feature_sweep_interval_s (an hour): until then expired rows are skipped by
    aggregates, raw reads and interactions, and make room under the fat-subject cap. Listings may still name a
    subject whose rows all expired (documented in lua/subjects.lua): its reads are empty."""
    s = private_settings(
        settings,
        tmp_path_factory.mktemp("sweep"),
        replicasets=1,
        max_features_per_subject=10,
        feature_sweep_interval_s=3600.0,
    )
    cluster = StoreCluster(s)
    await cluster.start()
    try:
        subject, client = f"{uid}-sw", f"{uid}-swc"
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            ends = time.time() + 1.5
            assert (await store.put_features(_rows(subject, 0, 10, ends))).written == 10
            opened = Feature(client, "products", f"product.{uid}p.opened", "p@1", ends - 10, ends - 10, ends)
            await store.put_features([opened])
            while time.time() < ends + 1.5:  # expired, and the expiry fiber ran a few passes
                await asyncio.sleep(0.25)
            seen = {
                "aggregate count": (await store.aggregate(subject, [AggregateSpec("count", "tx.out.amount")]))[0],
                "raw rows": len(await store.get_features(subject)),
                "written after expiry": (await store.put_features(_rows(subject, 10, 11))).written,
                "listed": sorted(
                    x
                    for x in (await store.replicasets[1].call("list_subjects", [uid, 1000], write=False))["subjects"]
                    if x.startswith(uid)
                ),
                "interactions": (await store.replicasets[1].call("interactions", [client[:-1], 10], write=False))[
                    "rows"
                ],
            }
        assert seen == {
            "aggregate count": 0,
            "raw rows": 0,
            "written after expiry": 1,
            "listed": [subject, client],  # `client` holds nothing live but is listed until the sweep
            "interactions": [],
        }
    finally:
        StoreCluster(s).stop()
