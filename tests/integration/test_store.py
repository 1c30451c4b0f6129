"""Feature store against the real Tarantool cluster (2 replica sets x master + 2 replicas)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asynctnt
import pytest

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.events import TransactionEvent
from extractors.extract import ExtractionConfig, extract_transaction
from extractors.ops import AppendFeatures, ApplyResult, StoreOp, apply_ops
from feature_store.admin import purge_subject
from feature_store.client import FeatureStore
from feature_store.errors import AccessDenied, BadArgument, Fenced, SubjectTooFat
from feature_store.fake import InMemoryFeatureStore
from feature_store.rebalance import move_bucket
from feature_store.records import Feature, Fence
from feature_store.specs import AggregateSpec, parse_spec
from feature_store.topology import InstanceSpec


async def _raw(spec: InstanceSpec, settings: Settings) -> asynctnt.Connection:
    conn = asynctnt.Connection(
        host=spec.host, port=spec.port, username=settings.store.user, password=settings.store.password
    )
    await conn.connect()
    return conn


async def _subject_rows(cluster: StoreCluster, settings: Settings, subject: str) -> dict[str, list[Any]]:
    """Rows of ``subject`` physically present on every instance, read straight from the space."""
    found: dict[str, list[Any]] = {}
    for spec in cluster.instances():
        conn = await _raw(spec, settings)
        try:
            rows = await conn.select("features", [subject], index="primary")
            found[spec.name] = sorted(list(r) for r in rows)
        finally:
            await conn.disconnect()
    return found


def tx(subject: str, n: int, now: float, source: str = "transactions", name: str = "tx.out.amount") -> list[Feature]:
    return [Feature(subject, source, name, f"{subject}-tx{i}", float(i + 1), now - i * 60) for i in range(n)]


async def test_records_land_on_the_replicaset_their_bucket_maps_to_and_replicate(
    store: FeatureStore,
    cluster: StoreCluster,
    settings: Settings,
    uid: str,
) -> None:
    now = time.time()
    subjects = [f"{uid}-c{i}" for i in range(12)]
    await store.put_features([f for s in subjects for f in tx(s, 5, now)])
    await cluster.wait_synced()
    owners = store.bucket_map
    assert len(set(owners.values())) == 2
    for subject in subjects:
        rs_id = owners[store.bucket_id_for(subject)]
        rows = await _subject_rows(cluster, settings, subject)
        for spec in cluster.instances():
            expected = 5 if spec.rs_id == rs_id else 0
            assert len(rows[spec.name]) == expected, (subject, spec.name)
        # replicas hold exactly the master's rows (same primary keys, values, times)
        same_rs = [rows[i.name] for i in cluster.topology[rs_id - 1].instances]
        assert same_rs[0] == same_rs[1] == same_rs[2]
        assert all(r[0] == store.bucket_id_for(subject) for r in same_rs[0])


async def test_redelivery_is_idempotent(store: FeatureStore, uid: str) -> None:
    subject = f"{uid}-idem"
    features = tx(subject, 50, time.time())
    first = await store.put_features(features)
    again = await store.put_features(features)
    assert (first.written, again.written, again.unchanged) == (50, 0, 50)
    rows = await store.get_features(subject)
    assert len(rows) == 50
    total = await store.aggregate(subject, [parse_spec("sum(tx.out.amount)"), parse_spec("count(tx.out.amount)")])
    assert total == [sum(range(1, 51)), 50]


async def test_a_raw_read_in_steps_gives_the_oldest_first_as_one_sort_would(store: FeatureStore, uid: str) -> None:
    """`get_features` reads a subject in steps of 250 rows (lua/read.lua), sorts each and merges them, yielding
    in between, so a 100,000-row subject no longer holds the master for half a second. 1,000 rows under four
    names with their times shuffled: every window, name and limit gives what one sort of everything gives."""
    import random

    subject = f"{uid}-steps"
    now = time.time()
    times = [now - 86400 - i * 7.0 for i in range(1000)]
    random.Random(5).shuffle(times)
    rows = [
        Feature(subject, "transactions", f"tx.out.mcc.n{i % 4}", f"t{i:04d}", float(i), t) for i, t in enumerate(times)
    ]
    await store.put_features(rows)
    oldest_first = sorted(rows, key=lambda f: f.time_use)

    def ids(found: list[Any]) -> list[str]:
        return [r.object for r in found]

    assert ids(await store.get_features(subject, limit=5000)) == [f.object for f in oldest_first]
    assert ids(await store.get_features(subject, limit=7)) == [f.object for f in oldest_first[:7]]
    lo, hi = oldest_first[100].time_use, oldest_first[699].time_use
    window = await store.get_features(subject, from_time=lo, to_time=hi, limit=5000)
    assert ids(window) == [f.object for f in oldest_first[100:700]]
    named = await store.get_features(subject, name="tx.out.mcc.n2", limit=5000)
    assert ids(named) == [f.object for f in oldest_first if f.name == "tx.out.mcc.n2"]


async def test_a_resent_transaction_supersedes_its_first_version(store: FeatureStore, uid: str) -> None:
    """A transaction sent again under its id with other fields (an authorisation settled with another amount,
    merchant category and no channel) replaces its first version: the old category would otherwise count the
    amount twice. The same in one batch (a version and its correction side by side); an unchanged resend
    changes nothing; the in-memory store the Kafka drills compare with ends the same."""
    subject = f"{uid}-resent"
    base = {"client_id": subject, "ts": time.time() - 60, "currency": "RUB", "direction": "out"}
    authorised = {**base, "amount": 100.0, "mcc": 4511, "channel": "online", "counterparty": "merchant:air"}
    settled = {**base, "amount": 90.0, "mcc": 5411}
    reference = InMemoryFeatureStore()

    async def send(*events: dict[str, Any]) -> ApplyResult:
        ops: list[StoreOp] = [
            AppendFeatures(tuple(extract_transaction(TransactionEvent.model_validate(e), ExtractionConfig())))
            for e in events
        ]
        await apply_ops(reference, ops)
        return await apply_ops(store, ops)

    async def names(tx_id: str) -> dict[str, Any]:
        rows = {r.name: r.value for r in await store.get_features(subject) if r.object == tx_id}
        assert rows == {f.name: f.value for f in reference.features.values() if f.object == tx_id}
        return rows

    first = {"tx.out.amount": 100, "tx.out.mcc.travel": 100, "tx.out.channel.online": 100, "tx.out.cp.merchant": 100}
    await send({**authorised, "tx_id": "t1"})
    assert await names("t1") == first
    corrected = await send({**settled, "tx_id": "t1"})
    assert await names("t1") == {"tx.out.amount": 90, "tx.out.mcc.groceries": 90} and corrected.superseded == 3
    again = await send({**settled, "tx_id": "t1"})
    assert (again.written, again.superseded) == (0, 0) and len(await names("t1")) == 2
    # one batch: the first version and its correction (only the last counts), and t1 back to its first version
    await send({**authorised, "tx_id": "t2"}, {**settled, "tx_id": "t2"}, {**settled, "tx_id": "t1"})
    await send({**authorised, "tx_id": "t1"})
    assert await names("t2") == {"tx.out.amount": 90, "tx.out.mcc.groceries": 90} and await names("t1") == first
    # a corrected direction: no name in common with the first version
    await send({**authorised, "tx_id": "t5"})
    await send({**authorised, "tx_id": "t5", "direction": "in", "mcc": None, "counterparty": None})
    assert await names("t5") == {"tx.in.amount": 100, "tx.in.channel.online": 100}
    # the store itself takes each run of an object's rows as a version, wherever it stands in the call
    v1 = extract_transaction(TransactionEvent.model_validate({**authorised, "tx_id": "t3"}), ExtractionConfig())
    v2 = extract_transaction(TransactionEvent.model_validate({**settled, "tx_id": "t3"}), ExtractionConfig())
    other = extract_transaction(TransactionEvent.model_validate({**settled, "tx_id": "t4"}), ExtractionConfig())
    await store.put_features([*v1, *other, *v2])
    assert {r.name for r in await store.get_features(subject) if r.object == "t3"} == {f.name for f in v2}
    total = await store.aggregate(subject, [parse_spec("sum(tx.out.amount)"), parse_spec("count(tx.out.amount)")])
    assert total == [100 + 90 + 90 + 90, 4]
    assert (await store.aggregate(subject, [parse_spec("count(tx.out.mcc.travel)")])) == [1]


async def test_a_writer_of_an_older_group_generation_writes_nothing_once_a_newer_one_wrote(
    store: FeatureStore, uid: str
) -> None:
    """A consumer that lost its partitions without hearing of it wrote the batch in its hands after their next
    owner had applied the correction: the first version came back for good. Its fence is refused now, whole,
    on the replica set where the newer generation wrote; a fence taken over (``force``) passes."""
    subject = f"{uid}-fenced"
    base = {"client_id": subject, "ts": time.time() - 60, "currency": "RUB", "direction": "out", "tx_id": "t1"}
    first = extract_transaction(
        TransactionEvent.model_validate({**base, "amount": 100.0, "mcc": 5411}), ExtractionConfig()
    )
    corrected = extract_transaction(
        TransactionEvent.model_validate({**base, "amount": 80.0, "mcc": 5812}), ExtractionConfig()
    )
    partition, other = f"{uid}-group/bank.transactions/3", f"{uid}-group/bank.transactions/4"

    async def amounts() -> dict[str, Any]:
        return {r.name: r.value for r in await store.get_features(subject) if r.object == "t1"}

    await store.put_features(first, Fence((partition,), 7))
    await store.put_features(corrected, Fence((partition,), 8))  # the partition's next owner
    with pytest.raises(Fenced) as refused:
        await store.put_features([*first, *tx(subject, 2, time.time())], Fence((other, partition), 7))
    assert refused.value.fields["stored"] == 8 and refused.value.fields["key"] == partition
    assert await amounts() == {"tx.out.amount": 80.0, "tx.out.mcc.restaurants": 80.0}  # nothing of the call
    await store.put_features(tx(subject, 1, time.time()), Fence((other,), 7))  # another partition's own fence
    await store.put_features(tx(subject, 1, time.time()), Fence((partition,), 8))  # the same generation writes on
    with pytest.raises(Fenced):  # a take-over of a fence that has moved on (a late request)
        await store.put_features(first, Fence((partition,), 2, takes_over=((partition, 7),)))
    await store.put_features(first, Fence((partition,), 2, takes_over=((partition, 8),)))  # a group created anew
    await store.put_features(corrected, Fence((partition,), 2))
    with pytest.raises(Fenced):
        await store.put_features(first, Fence((partition,), 1))
    with pytest.raises(Fenced) as refused:
        await store.put_features(first, Fence((partition, other), 2, takes_over=((partition, 8),)))
    assert refused.value.fields["refused"] == {other: 7}  # every refused fence is named
    assert (await amounts())["tx.out.amount"] == 80.0
    await store.put_features(first)  # the replay and the HTTP API write unfenced
    assert (await amounts())["tx.out.amount"] == 100.0
    for malformed in ({"keys": "p", "generation": 1}, {"keys": [1], "generation": 1}, {"keys": [], "generation": -1}):
        with pytest.raises(BadArgument):
            await store.replicasets[1].call("put_features", [[], malformed])


async def test_a_correction_is_recognised_whatever_it_changed(
    store: FeatureStore, settings: Settings, uid: str
) -> None:
    """What a name-by-name comparison misses: a corrected direction shares no name with its first version (a
    transaction without a balance); a resend that differs only in expiry (a TTL change) is no new version, so
    nothing goes; a correction whose new row a full client refuses leaves the first version whole instead of
    half replaced (dropping its rows would free just the room the refused row lacked)."""
    subject, now = f"{uid}-fix", time.time()

    def row(tx_id: str, name: str, value: float, owner: str = subject, expires: float | None = None) -> Feature:
        return Feature(owner, "transactions", name, tx_id, value, now - 60, expires)

    async def names(tx_id: str, owner: str = subject) -> set[str]:
        candidates = ("tx.in.amount", "tx.in.channel.atm", "tx.out.amount", "tx.out.channel.atm", "tx.out.mcc.travel")
        rows = [r for name in candidates for r in await store.get_features(owner, name=name, limit=100_000)]
        return {r.name for r in rows if r.object == tx_id}

    await store.put_features([row("d", "tx.out.amount", 10.0), row("d", "tx.out.channel.atm", 10.0)])
    flipped = await store.put_features([row("d", "tx.in.amount", 10.0), row("d", "tx.in.channel.atm", 10.0)])
    assert flipped.superseded == 2 and await names("d") == {"tx.in.amount", "tx.in.channel.atm"}

    await store.put_features([row("e", "tx.out.amount", 5.0), row("e", "tx.out.mcc.travel", 5.0)])
    relabelled = await store.put_features([row("e", "tx.out.amount", 5.0, expires=now + 900 * 86400)])
    assert (relabelled.written, relabelled.superseded) == (1, 0)
    assert await names("e") == {"tx.out.amount", "tx.out.mcc.travel"}

    fat = f"{uid}-fix-fat"
    await store.put_features([row("f", "tx.out.amount", 7.0, fat), row("f", "tx.out.channel.atm", 7.0, fat)])
    filled = await store.put_features(tx(fat, settings.store.max_features_per_subject, now))
    assert filled.refused
    corrected = await store.put_features([row("f", "tx.out.amount", 8.0, fat), row("f", "tx.out.mcc.food", 8.0, fat)])
    assert {code for _, code in corrected.refused} == {"SUBJECT_TOO_FAT"} and corrected.superseded == 0
    assert await names("f", fat) == {"tx.out.amount", "tx.out.channel.atm"}
    await purge_subject(store, fat)


async def test_replace_ignores_older_versions_and_removes_stale_features(store: FeatureStore, uid: str) -> None:
    subject = f"{uid}-repl"
    t0 = float(int(time.time()))  # versions are event times: recent ones, or the rows would be expired

    def profile(segment: str, region: str | None, version: float) -> list[Feature]:
        rows = [Feature(subject, "client_profile", "profile.segment", subject, segment, version)]
        if region:
            rows.append(Feature(subject, "client_profile", "profile.region", subject, region, version))
        return rows

    assert (await store.replace_source(subject, "client_profile", t0 - 100, profile("retail", "spb", t0 - 100))).applied
    newer = await store.replace_source(subject, "client_profile", t0, profile("sme", None, t0))
    assert newer.applied and newer.deleted == 1
    older = await store.replace_source(subject, "client_profile", t0 - 50, profile("corporate", "kazan", t0 - 50))
    assert not older.applied and older.stored_version == t0
    rows = await store.get_features(subject)
    assert [(r.name, r.value) for r in rows] == [("profile.segment", "sme")]


async def test_replace_is_atomic_for_concurrent_readers(store: FeatureStore, uid: str) -> None:
    subject = f"{uid}-atomic"
    stop = asyncio.Event()
    seen_mixed = []

    t0 = time.time()  # recent event times, or the rows would be expired

    async def writer() -> None:
        for version in range(1, 40):
            rows = [
                Feature(subject, "registry", f"registry.f{i}", subject, version, t0 + version)
                for i in range(60 if version % 2 else 30)
            ]
            await store.replace_source(subject, "registry", t0 + version, rows)
        stop.set()

    async def reader() -> None:
        while not stop.is_set():
            rows = await store.get_features(subject)
            values = {r.value for r in rows}
            if len(values) > 1 or (rows and len(rows) != (60 if rows[0].value % 2 else 30)):
                seen_mixed.append(values)

    await asyncio.gather(writer(), reader(), reader())
    assert seen_mixed == []
    assert {r.value for r in await store.get_features(subject)} == {39}


async def test_delete_before_the_transaction_arrives_blocks_resurrection(store: FeatureStore, uid: str) -> None:
    subject = f"{uid}-del"
    features = tx(subject, 3, time.time())
    await store.put_features(features[:2])
    assert await store.delete_object(subject, features[0].object) == 1
    assert await store.delete_object(subject, features[2].object) == 0  # not arrived yet
    result = await store.put_features(features)  # redelivery of 0 and late arrival of 2
    assert result.tombstoned == 2
    assert [r.object for r in await store.get_features(subject)] == [features[1].object]


async def test_a_tombstone_lasts_as_long_as_the_rows_it_blocks(
    store: FeatureStore, cluster: StoreCluster, settings: Settings, uid: str
) -> None:
    """A replay of an old window whose deletion lies outside it must not bring the transaction back while its
    rows could still be stored: the tombstone lives as long as the deleted source's TTL (a week did not)."""
    subject = f"{uid}-tomb"
    deleted_at = time.time()
    await store.delete_object(subject, "t1", source="transactions")
    await store.delete_object(subject, "any", source=None)
    await store.delete_object(subject, "any", source="transactions")  # a later, narrower delete shortens nothing
    await cluster.wait_synced()
    rows: dict[str, Any] = {}
    for spec in cluster.instances():
        conn = await _raw(spec, settings)
        try:
            rows |= {t[1]: list(t) for t in await conn.select("tombstones", [subject])}
        finally:
            await conn.disconnect()
    assert set(rows) == {"t1", "any"}
    policy = store.ttl
    assert rows["t1"][3] == pytest.approx(deleted_at + policy.longest_days("transactions") * 86400, abs=60)
    assert rows["any"][3] == pytest.approx(deleted_at + policy.longest_days(None) * 86400, abs=60)
    assert policy.longest_days("transactions") >= settings.ttl.sources["transactions"]
    assert rows["t1"][3] - deleted_at > 365 * 86400


async def test_a_transaction_deletion_leaves_other_sources_sharing_its_id(store: FeatureStore, uid: str) -> None:
    """Core banking ids collide across kinds (a transaction id equal to the client's or an application's): a
    transaction deletion removes and blocks only transaction rows."""
    subject, now = f"{uid}-scope", time.time()
    profile = [Feature(subject, "profile", "profile.segment", subject, "mass", now)]
    await store.replace_source(subject, "profile", now, profile)
    application = Feature(subject, "applications", "app.deposit.submitted", "A77", 1, now)
    await store.put_features([application, *tx(subject, 1, now)])
    assert await store.delete_object(subject, subject, source="transactions") == 0
    assert await store.delete_object(subject, "A77", source="transactions") == 0
    assert await store.delete_object(subject, f"{subject}-tx0", source="transactions") == 1
    assert {r.name for r in await store.get_features(subject)} == {"profile.segment", "app.deposit.submitted"}
    again = await store.put_features([application, Feature(subject, "transactions", "tx.in.amount", "A77", 5, now)])
    assert (again.unchanged, again.tombstoned) == (1, 1)  # the application is still writable, the transaction not
    changed = [Feature(subject, "profile", "profile.segment", subject, "affluent", now + 1)]
    assert (await store.replace_source(subject, "profile", now + 1, changed)).written == 1
    # a deletion of every source (the API's) widens the scope of an existing one
    assert await store.delete_object(subject, "A77") == 1
    assert (await store.put_features([application])).tombstoned == 1


async def test_client_data_of_a_deleted_object_is_skipped_not_an_error(store: FeatureStore, uid: str) -> None:
    """A client-data replace meeting a tombstone skips that row and applies the rest, as put_features does (it
    was an internal error, which held the consumer until the tombstone expired: 7 days)."""
    subject, now = f"{uid}-tomb", time.time()
    rows = [
        Feature(subject, "profile", "profile.segment", subject, "mass", now),
        Feature(subject, "profile", "profile.region", "home", "north", now),
    ]
    await store.replace_source(subject, "profile", now, rows)
    assert await store.delete_object(subject, subject) == 1  # DELETE /v1/subjects/S/objects/S
    moved = [rows[0], Feature(subject, "profile", "profile.region", "home", "south", now + 1)]
    result = await store.replace_source(subject, "profile", now + 1, moved)
    assert (result.applied, result.written, result.tombstoned) == (True, 1, 1)
    assert {(r.name, r.value) for r in await store.get_features(subject)} == {("profile.region", "south")}


async def test_expired_features_disappear_by_the_background_fiber(store: FeatureStore, uid: str) -> None:
    subject = f"{uid}-exp"
    now = time.time()
    live = Feature(subject, "transactions", "tx.in.amount", "keep", 1.0, now, expires_at=now + 3600)
    dying = [
        Feature(subject, "transactions", "tx.in.amount", f"old{i}", 1.0, now - 10, expires_at=now + 0.3)
        for i in range(20)
    ]
    await store.put_features([live, *dying])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = await store.get_features(subject)
        if len(rows) == 1:
            break
        await asyncio.sleep(0.2)
    assert [r.object for r in rows] == ["keep"]


# Expired rows on the master, a pass that fails inside its transaction (as a demotion or an out-of-memory between
# two deletes would), then a pass with the fault gone: what the expiry fiber does in a loop.
EXPIRY_AFTER_A_FAILED_PASS = """
local subject = ...
local expiry, dict = require('expiry'), require('dict')
local bucket = box.space._bucket.index.status:select({'active'}, {limit = 1})[1][1]
-- the fault before the rows: the background expiry fiber, which runs while the commit yields, must not delete
-- them before the pass under test meets them (it did, and that pass had nothing to fail on)
local fault = box.space.features:before_replace(function(old, new)
    if new == nil and old ~= nil and old[2] == subject then
        error('injected failure')
    end
end)
box.begin()
local name, source = dict.intern('name', 'tx.wedge'), dict.intern('source', 'transactions')
for i = 1, 3 do
    box.space.features:insert{bucket, subject, name, 'o' .. i, source, 1, 0, 1}
end
box.commit()
local failures = expiry.report().failures
local first = expiry.pass(true)
local failed = expiry.report().failures - failures
box.space.features:before_replace(nil, fault)
local open_after_failure = box.is_in_txn()
local second = expiry.pass(true)
return {first, failed, open_after_failure, second, expiry.report().failures - failures,
        box.space.features.index.primary:count({subject})}
"""


async def test_a_failed_expiry_pass_leaves_no_transaction_behind(
    store: FeatureStore, cluster: StoreCluster, settings: Settings
) -> None:
    """An expiry pass that failed inside its transaction left it open: every later pass failed with "active
    transaction", and the master never freed an expired row again, silently."""
    master = cluster.topology[0].bootstrap_master
    conn = asynctnt.Connection(
        host=master.host, port=master.port, username=settings.store.user, password=settings.store.password
    )
    await conn.connect()
    try:
        answer = (await conn.eval(EXPIRY_AFTER_A_FAILED_PASS, ["expiry-wedge"], timeout=10.0)).body[0]
    finally:
        await conn.disconnect()
    first, failed, open_after_failure, second, new_failures, left = answer
    # at least one failure counted: the background expiry fiber may run a pass of its own while the fault is in
    # (the pass yields at its WAL write), and count one more
    assert (first, failed >= 1, open_after_failure) == (False, True, False)
    assert (second, new_failures >= 1, left) == (True, True, 0)


async def test_aggregates_never_count_an_expired_row_whatever_the_sweep(store: FeatureStore, uid: str) -> None:
    """The walk that frees expired rows runs at most hourly by default: reads must not depend on it."""
    subject = f"{uid}-ttl"
    now = time.time()
    await store.put_features(
        [
            Feature(subject, "transactions", "tx.in.amount", "short", 5.0, now - 60, expires_at=now + 3600),
            Feature(subject, "transactions", "tx.in.amount", "long", 7.0, now - 60, expires_at=now + 30 * 86400),
        ]
    )
    specs = [parse_spec("count(tx.in.amount)"), parse_spec("sum(tx.in.amount)")]
    assert await store.aggregate(subject, specs, now) == [2, 12.0]
    assert await store.aggregate(subject, specs, now + 7200) == [1, 7.0]  # "short" has expired by then


async def test_fat_subject_is_capped_and_denied_subjects_are_refused(
    store: FeatureStore,
    settings: Settings,
    uid: str,
) -> None:
    cap = settings.store.max_features_per_subject
    subject = f"{uid}-fat"
    result = await store.put_features(tx(subject, cap + 25, time.time()))
    assert result.written == cap
    assert len(result.refused) == 25 and {code for _, code in result.refused} == {"SUBJECT_TOO_FAT"}
    with pytest.raises(SubjectTooFat):
        await store.replace_source(
            subject, "client_profile", 1.0, [Feature(subject, "client_profile", "profile.segment", subject, "x", 1.0)]
        )
    # updates of already stored features are still accepted (they do not grow the subject)
    again = await store.put_features(tx(subject, 10, time.time() + 5))
    assert again.written == 10 and not again.refused
    # the ops tool removes it in yielding batches
    assert await purge_subject(store, subject) == cap
    denied = await store.put_features(tx("BANK", 3, time.time()))
    assert denied.written == 0 and {code for _, code in denied.refused} == {"SUBJECT_DENIED"}


async def test_moving_a_bucket_keeps_every_record_without_key_collisions(
    store: FeatureStore,
    cluster: StoreCluster,
    settings: Settings,
    uid: str,
) -> None:
    now = time.time()
    subject = f"{uid}-move"
    bucket = store.bucket_id_for(subject)
    source_rs = store.bucket_map[bucket]
    target_rs = 2 if source_rs == 1 else 1
    fence = f"{uid}-group/bank.transactions/0"
    await store.put_features(tx(subject, 300, now), Fence((fence,), 5))  # a consumer's fence travels too
    await store.delete_object(subject, f"{subject}-tx0")  # and a tombstone
    before = await store.get_features(subject)
    keys_before = {(r.source, r.name, r.object) for r in before}

    result = await move_bucket(store, bucket, target_rs, page=64)
    assert result.records >= 299  # other subjects may share the bucket; per-subject checks follow
    after = await store.get_features(subject)
    assert {(r.source, r.name, r.object) for r in after} == keys_before  # identity kept, on the new replica set
    assert store.bucket_map[bucket] == target_rs
    await cluster.wait_synced()
    rows = await _subject_rows(cluster, settings, subject)
    for spec in cluster.instances():
        assert len(rows[spec.name]) == (299 if spec.rs_id == target_rs else 0), spec.name

    # New records on the target sit beside the moved ones: the natural key is the identity, no sequence can
    # collide (the field report's lesson), and the target interned the moved names and sources itself.
    more = [Feature(subject, "transactions", "tx.in.amount", f"{subject}-new{i}", 1.0, now) for i in range(400)]
    assert (await store.put_features(more)).written == 400
    final = await store.get_features(subject)
    assert len(final) == 699 and len({(r.source, r.name, r.object) for r in final}) == 699
    assert (await store.put_features(tx(subject, 1, now))).tombstoned == 1
    with pytest.raises(Fenced):  # a stale consumer's write rerouted to the new owner meets the fence there
        await store.put_features(tx(subject, 1, now), Fence((fence,), 4))

    # A writer with a stale bucket map is redirected (WRONG_BUCKET -> refresh -> retry).
    async with FeatureStore(settings.store, topology=cluster.topology) as stale:
        stale._bucket_owner[bucket] = source_rs
        assert (await stale.put_features([Feature(subject, "transactions", "x", "late", 1.0, now)])).written == 1
    await move_bucket(store, bucket, source_rs)  # and back: still no collision
    assert len(await store.get_features(subject)) == 700


async def test_store_users_hold_only_what_their_role_needs(cluster: StoreCluster, settings: Settings, uid: str) -> None:
    feature = Feature(f"{uid}-p", "transactions", "tx.out.amount", "t1", 5.0, time.time())
    master = cluster.topology[0].bootstrap_master
    async with FeatureStore(settings.store, topology=cluster.topology, role="ingest") as ingest:
        assert (await ingest.put_features([feature])).written == 1  # the consumers write features ...
        with pytest.raises(AccessDenied):  # ... and read nothing
            await ingest.aggregate(feature.subject, [parse_spec("sum(tx.out.amount)")])
        with pytest.raises(AccessDenied):
            await ingest.replicasets[1].call("bucket_drop", [1])
    async with FeatureStore(settings.store, topology=cluster.topology, role="api") as api:
        assert await api.aggregate(feature.subject, [parse_spec("sum(tx.out.amount)")]) == [5.0]
        for ops_only in (("bucket_drop", [1]), ("promote", [99]), ("set_replication", [[]]), ("expire_now", [])):
            with pytest.raises(AccessDenied):
                await api.replicasets[1].call(*ops_only)
    user, password = settings.store.credentials("api")
    raw = asynctnt.Connection(host=master.host, port=master.port, username=user, password=password)
    await raw.connect()
    try:
        with pytest.raises(asynctnt.exceptions.TarantoolError, match=r"denied|not found"):
            await raw.select("features", [feature.subject], index="primary")  # spaces are not even visible
        with pytest.raises(asynctnt.exceptions.TarantoolError, match="denied"):
            await raw.eval("return box.space.features:len()")
    finally:
        await raw.disconnect()
    guest = asynctnt.Connection(host=master.host, port=master.port)
    with pytest.raises(Exception, match=r"denied|Usage"):  # guest may not even open a session
        await guest.connect()
        await guest.call("rtrec.ping", [])
    await guest.disconnect()


async def test_reads_from_replicas_never_reach_the_master(cluster: StoreCluster, settings: Settings) -> None:
    """A client that only reads (`rtrec train` with `training_read_from = "replica"`) has never had to find the
    master; its reads must still go to read-only copies only."""
    replica_settings = settings.store.model_copy(update={"read_from": "replica"})
    async with FeatureStore(replica_settings, topology=cluster.topology) as reader:
        for rs in reader.replicasets.values():
            answers = [await rs.call("ping", [], write=False) for _ in range(30)]
            assert all(answer["ro"] for answer in answers)
            assert len({answer["uuid"] for answer in answers}) == 2  # both replicas share the reads


DAY = 86400.0


async def test_a_spec_asked_twice_is_answered_in_every_place_it_was_asked(store: FeatureStore, uid: str) -> None:
    """The client sends each distinct spec once (the store folds every row into every spec it is sent, and an
    inspection request may hold 500) and puts the answers back in the order asked."""
    subject = f"{uid}-twice"
    now = 1.79e9 + 7.5 * DAY
    await store.put_features(
        [Feature(subject, "transactions", "tx.out.amount", f"t{i}", float(i % 3), 1.79e9 + i * DAY) for i in range(8)]
    )
    total, changed, recent = (
        AggregateSpec("sum", "tx.out.amount"),
        AggregateSpec("changes", "tx.out.amount", 4 * DAY),
        AggregateSpec("count", "tx.out.amount", 3 * DAY),
    )
    alone = [(await store.aggregate(subject, [spec], now))[0] for spec in (total, changed, recent)]
    assert alone == [7.0, 4, 3]
    asked = [changed, total, changed, recent, total, changed]
    assert await store.aggregate(subject, asked, now) == [alone[1], alone[0], alone[1], alone[2], alone[0], alone[1]]
