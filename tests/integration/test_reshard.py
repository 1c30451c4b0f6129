"""Adding a replica set while ingest runs: buckets move, writers follow, nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from deploy.cluster import StoreCluster
from deploy.settings import Settings
from deploy.stack import LocalStack
from extractors.consumer import ExtractorConsumer
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.admin import store_stats
from feature_store.client import FeatureStore
from feature_store.errors import BucketStateError, StoreError, WrongBucket
from feature_store.listings import list_subjects
from feature_store.rebalance import MoveNotReplicated, SendNotReplicated, move_bucket, recover_moves
from feature_store.records import Feature
from feature_store.replicaset import ReplicaSetClient
from feature_store.specs import parse_view
from feature_store.topology import InstanceSpec, ReplicaSetSpec
from tests.conftest import ROOT, reference_state


async def test_adding_a_replicaset_under_load_keeps_every_record(
    private_cluster: tuple[Settings, StoreCluster],
    uid: str,
) -> None:
    s, cluster = private_cluster
    events = list(BankSimulator(SimulationConfig(clients=40, days=90, seed=29, client_prefix=f"{uid}r")).events())
    subjects = sorted({key for _, key, _ in events})
    await publish_events(s, events, progress=False)

    async with FeatureStore(s.store, topology=cluster.topology) as store:
        consumer = ExtractorConsumer(s, store)  # knows two replica sets; must find the third by itself
        ingest = asyncio.create_task(consumer.run(idle_exit_s=4.0))
        while consumer.stats.features_written < 3000 and not ingest.done():
            await asyncio.sleep(0.01)
        result = await cluster.add_replicaset(concurrency=4)
        stats = await asyncio.wait_for(ingest, timeout=300)
        assert stats.messages == len(events)
        assert result["replicaset"] == 3 and result["buckets_moved"] == 1000

        await store.refresh_bucket_map()
        owners = store.bucket_map
        assert len(owners) == s.store.bucket_count
        assert sorted({rs for rs in owners.values()}) == [1, 2, 3]
        assert sum(1 for rs in owners.values() if rs == 3) == 1000

        reference = await reference_state(s, events)
        view = parse_view(s.views["client_profile"])
        total = 0
        for subject in subjects:
            rows = await store.get_features(subject, limit=100_000)
            total += len(rows)
            assert {(r.source, r.name, r.object, r.value, r.time_use) for r in rows} == reference.snapshot(subject)
            assert len({(r.source, r.name, r.object) for r in rows}) == len(rows)  # one record per natural key
        # the total record count across all three replica sets equals the reference: no loss, no duplicate
        stored = sum(
            inst["features"]
            for rs in (await store_stats(store)).values()
            for name, inst in rs.items()
            if not inst.get("ro", True)
        )
        assert stored == total == sum(len(reference.snapshot(x)) for x in subjects)
        now = max(float(p["ts"]) for _, _, p in events)
        for subject in subjects[:5]:
            got, want = await store.aggregate(subject, view, now), await reference.aggregate(subject, view, now)
            for g, w in zip(got, want, strict=True):
                assert g == (pytest.approx(w) if isinstance(w, float) else w)


async def _bucket_of_rs1(store: FeatureStore, uid: str) -> tuple[str, int]:
    for i in range(10_000):
        subject = f"{uid}-m{i}"
        if store.bucket_map.get(store.bucket_id_for(subject)) == 1:
            return subject, store.bucket_id_for(subject)
    raise AssertionError("no subject on replica set 1")


def _features(subject: str, n: int, start: int = 0) -> list[Feature]:
    return [
        Feature(subject, "transactions", "tx.out.amount", f"t{i}", float(i + 1), 1.79e9 + i)
        for i in range(start, start + n)
    ]


MOVE = "test-move-1"


async def _half_move(store: FeatureStore, bucket: int) -> None:
    """A move that stops after its first page (the mover is killed)."""
    source, target = store.replicasets[1], store.replicasets[2]
    await source.call("bucket_start_send", [bucket, 2, MOVE])
    page = await source.call("bucket_export", [bucket, None, 500])
    await target.call("bucket_import", [bucket, page["features"], page["extra"], MOVE, True, 1])


async def _sent_whole(store: FeatureStore, bucket: int) -> tuple[ReplicaSetClient, ReplicaSetClient]:
    """A move from replica set 1 to 2 whose every page arrived and that the source marked sent: the mover stops
    before the activation. Returns the source and the destination."""
    source, target = store.replicasets[1], store.replicasets[2]
    await source.call("bucket_start_send", [bucket, 2, MOVE])
    everything = await source.call("bucket_export", [bucket, None, 5000])
    await target.call("bucket_import", [bucket, everything["features"], everything["extra"], MOVE, True, 1])
    await source.call("bucket_mark_sent", [bucket, MOVE])
    return source, target


async def _cut_off_master(cluster: StoreCluster, rs: ReplicaSetSpec) -> InstanceSpec:
    """The replica set's replicas follow each other, no longer their master (asynchronous replication falling
    behind, at its worst): what the master writes from now on, only it holds. Returns the master."""
    master = cluster.instance(cluster.master_name(rs))
    replicas = [spec for spec in rs.instances if spec != master]
    peers = [cluster.peer_uri(spec) for spec in replicas]
    for spec in replicas:
        await cluster.call_instance(spec, "set_replication", [peers], timeout=10)
    return master


async def test_an_interrupted_move_refuses_writes_until_recover_rolls_it_back(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 1200))
        await _half_move(store, bucket)
        with pytest.raises(WrongBucket):  # stuck: nobody takes writes for this bucket
            await store.put_features(_features(subject, 1, start=5000))
        status = await asyncio.to_thread(LocalStack(s, ROOT / "deploy" / "local.toml").status)
        assert any("buckets in transfer" in p and "--recover" in p for p in status["problems"])

        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "rolled back")]
        await store.put_features(_features(subject, 1, start=5000))  # writable again, at the source
        assert len(await store.get_features(subject, limit=10_000)) == 1201
        state = await store.replicasets[2].call("bucket_move_state", [bucket, MOVE], write=False)
        assert state["status"] is None and not state["activated"]  # the partial copy was discarded
        with pytest.raises(BucketStateError):  # a step of the abandoned mover fails instead of reviving it
            await store.replicasets[2].call("bucket_import", [bucket, [], None, MOVE, False, 1])
        assert await recover_moves(store) == []  # nothing left to do


async def test_a_move_interrupted_after_activation_is_finished(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 700))
        await _half_move(store, bucket)
        rest = await store.replicasets[1].call("bucket_export", [bucket, None, 5000])
        await store.replicasets[2].call("bucket_import", [bucket, rest["features"], None, MOVE, False, 1])
        await store.replicasets[1].call("bucket_mark_sent", [bucket, MOVE])
        await store.replicasets[2].call("bucket_activate", [bucket, MOVE])  # the mover dies before dropping

        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "finished")]
        assert (await store.replicasets[1].call("bucket_move_state", [bucket, MOVE], write=False))["status"] is None
        await store.put_features(_features(subject, 1, start=5000))  # lands on replica set 2 now
        assert len(await store.get_features(subject, limit=10_000)) == 701


async def test_a_move_whose_destination_died_is_left_until_it_is_back_then_rolled_back(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 900))
        await _half_move(store, bucket)
        await cluster.wait_synced()
        destination = cluster.topology[1]
        for spec in destination.instances:  # the whole destination replica set goes down
            cluster.kill(spec.name, signal.SIGKILL)
        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "left")]
        assert "unreachable" in results[0].reason
        await cluster.start()
        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "rolled back")]
        await store.put_features(_features(subject, 1, start=5000))
        assert len(await store.get_features(subject, limit=10_000)) == 901


async def test_a_move_that_had_sent_every_page_is_resumed_and_one_that_moved_on_is_finished(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 300))
        source, target = await _sent_whole(store, bucket)  # the mover dies before activating
        with pytest.raises(StoreError):  # sent: the source serves nothing, the destination not yet
            await store.get_features(subject)
        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "resumed")]
        assert len(await store.get_features(subject, limit=10_000)) == 300

        # a move 2 -> 1 activated on 1 and then interrupted; meanwhile 1 moved the bucket on (back to 2):
        # recover must finish the old move (drop the stale copy at 2), not give 2 the bucket back
        await target.call("bucket_start_send", [bucket, 1, "move-2"])
        page = await target.call("bucket_export", [bucket, None, 5000])
        await source.call("bucket_import", [bucket, page["features"], page["extra"], "move-2", True, 2])
        await target.call("bucket_mark_sent", [bucket, "move-2"])
        await source.call("bucket_activate", [bucket, "move-2"])
        await store.refresh_bucket_map()
        with pytest.raises(BucketStateError):  # 2 still holds its sent copy: it cannot receive the bucket yet
            await move_bucket(store, bucket, 2)
        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "finished")]
        await move_bucket(store, bucket, 2)  # and now it can
        assert len(await store.get_features(subject, limit=10_000)) == 300
        assert await recover_moves(store) == []


async def test_a_sent_move_whose_destination_lost_its_last_pages_is_copied_again(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """The source marks a move sent once every import was acknowledged; a destination master that died before
    replicating the last pages comes back (failed over) with a partial copy. Resuming activated that copy and
    dropped the source's: the bucket's history was lost for good, beyond what a replay can bring back."""
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 1200))
        await _half_move(store, bucket)  # the first 500 rows reached the destination's new master
        await store.replicasets[1].call("bucket_mark_sent", [bucket, MOVE])
        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "resumed")]
        assert len(await store.get_features(subject, limit=10_000)) == 1200
        assert (await store.replicasets[1].call("bucket_move_state", [bucket, MOVE], write=False))["status"] is None


async def test_the_source_keeps_its_copy_until_a_replica_of_the_destination_has_it(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """Dropped at once after activation, the source's copy was the only other one: had the destination's master
    died before replicating, the bucket's history went with it."""
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 400))
        destination = cluster.topology[1]
        replicas = [spec for spec in destination.instances if spec != destination.bootstrap_master]
        for spec in replicas:
            cluster.kill(spec.name, signal.SIGKILL)
        with pytest.raises(MoveNotReplicated, match="keeps its copy"):
            await move_bucket(store, bucket, 2, replication_wait_s=1.0)
        assert len(await store.get_features(subject, limit=10_000)) == 400  # served by the destination
        state = await store.replicasets[1].call("bucket_move_state", [bucket, None], write=False)
        assert state["status"] == "sent"  # kept, serving nothing
        await cluster.start()
        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "finished")]
        assert (await store.replicasets[1].call("bucket_move_state", [bucket, None], write=False))["status"] is None
        assert len(await store.get_features(subject, limit=10_000)) == 400


async def test_a_destination_promoted_past_the_activation_does_not_let_the_source_drop_its_copy(
    private_cluster: tuple[Settings, StoreCluster], uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mover's last question (has a replica of the destination every row?) reaches whichever copy is master
    by then: the call retries on the new master after a lost connection. Here the destination's master
    activates the bucket and dies before its replicas heard of the move, and failover promotes one of them. It
    answered for its own rows, which its replica had, so the source dropped the only copy left: the bucket was
    active nowhere and its history gone. The answer now needs the move's activation on the copy that gives it."""
    s, cluster = private_cluster
    destination = cluster.topology[1]
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 300))
        old = await _cut_off_master(cluster, destination)
        target = store.replicasets[destination.id]
        call = target.call

        async def dying_after_activation(fn: str, args: list[Any], **kwargs: Any) -> Any:
            answer = await call(fn, args, **kwargs)
            if fn == "bucket_activate":
                cluster.kill(old.name, signal.SIGKILL)
                await cluster.failover(destination.id)
            return answer

        monkeypatch.setattr(target, "call", dying_after_activation)
        with pytest.raises(MoveNotReplicated, match="does not hold its activation"):
            await move_bucket(store, bucket, destination.id, replication_wait_s=2.0)
        monkeypatch.undo()
        assert (await store.replicasets[1].call("bucket_move_state", [bucket, None]))["status"] == "sent"  # kept
        results = await recover_moves(store)
        assert [(r.bucket_id, r.action) for r in results] == [(bucket, "rolled back")]  # nothing reached it
        assert len(await store.get_features(subject, limit=10_000)) == 300


async def test_a_source_whose_replicas_missed_the_move_keeps_the_bucket_rather_than_share_it(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """The destination activated a bucket the source's replicas had not heard was leaving (asynchronous
    replication): when the source's master then died, failover promoted one of them, which held the bucket
    active, and the bucket was writable in two replica sets. The move now goes on only once a replica of the
    source holds the bucket sent; here none can, and the move is given back."""
    s, cluster = private_cluster
    source = cluster.topology[0]
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 100))
        await cluster.wait_synced()
        old = await _cut_off_master(cluster, source)
        with pytest.raises(SendNotReplicated, match="no replica caught up"):
            await move_bucket(store, bucket, 2, replication_wait_s=1.0)
        cluster.kill(old.name, signal.SIGKILL)
        await cluster.failover(source.id)
        states = [(await store.replicasets[rs].call("bucket_move_state", [bucket, None]))["status"] for rs in (1, 2)]
        assert states == ["active", None]  # one owner: the source's promoted replica
        await store.put_features(_features(subject, 1, start=100))
        assert len(await store.get_features(subject, limit=10_000)) == 101


async def test_a_destination_answers_for_an_activation_it_holds_after_the_bucket_left_it(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """`reshard --recover` finishes a move its destination activated even when the bucket has moved on from there
    since: the question is whether the activation is there (the move's record, written with it), not whether
    the bucket still is. Asked about the bucket's status, recover left the source's stale copy for ever."""
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 50))
        _, target = await _sent_whole(store, bucket)
        await target.call("bucket_activate", [bucket, MOVE])
        await target.call("bucket_start_send", [bucket, 1, "moving-on"])  # the bucket leaves 2 again
        await target.call("bucket_mark_sent", [bucket, "moving-on"])
        answer = await target.call("bucket_wait_replicated", [bucket, MOVE, 5.0])
        assert answer["activated"] and answer["replicated"]
        assert not (await target.call("bucket_wait_replicated", [bucket, "another-move", 1.0]))["activated"]


async def test_a_read_between_a_moves_sent_and_its_activation_waits_for_the_new_owner(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """For a few milliseconds per bucket no replica set owns it: a read or a write then failed at once (a whole
    training run with it), where it should look the owner up again."""
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 50))
        source, target = await _sent_whole(store, bucket)
        await store.refresh_bucket_map()
        assert bucket not in store.bucket_map
        read = asyncio.create_task(store.get_features(subject, limit=10_000))
        write = asyncio.create_task(store.put_features(_features(subject, 1, start=5000)))
        await asyncio.sleep(0.1)
        await target.call("bucket_activate", [bucket, MOVE])
        assert len(await read) == 50 and (await write).written == 1
        await source.call("bucket_drop", [bucket])


async def test_a_client_starts_while_a_replica_set_has_no_master_or_is_down(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """Bucket ownership is replicated: an API (re)started while a master is dead must learn it from a replica,
    and one replica set down must not keep the others' clients from being served."""
    s, cluster = private_cluster
    rs2 = cluster.topology[1]
    cluster.kill(rs2.bootstrap_master.name, signal.SIGKILL)
    try:
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            assert sorted(set(store.bucket_map.values())) == [1, 2] and len(store.bucket_map) == s.store.bucket_count
        for spec in rs2.instances:
            cluster.kill(spec.name, signal.SIGKILL)
        async with FeatureStore(s.store, topology=cluster.topology) as store:
            assert set(store.bucket_map.values()) == {1}
            subject, _ = await _bucket_of_rs1(store, uid)
            assert (await store.put_features(_features(subject, 3))).written == 3
    finally:
        await cluster.start()


async def test_a_client_in_a_moving_bucket_is_listed_once(
    private_cluster: tuple[Settings, StoreCluster], uid: str
) -> None:
    """Training lists its clients from every replica set: a bucket half received, or sent and not yet dropped,
    lives on two of them and gave its clients twice (double weight in the fit and the holdout)."""
    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        subject, bucket = await _bucket_of_rs1(store, uid)
        await store.put_features(_features(subject, 700))
        await _half_move(store, bucket)  # sending at 1, a partial copy receiving at 2
        assert (await list_subjects(store)).count(subject) == 1
        rest = await store.replicasets[1].call("bucket_export", [bucket, None, 5000])
        await store.replicasets[2].call("bucket_import", [bucket, rest["features"], None, MOVE, False, 1])
        await store.replicasets[1].call("bucket_mark_sent", [bucket, MOVE])
        await store.replicasets[2].call("bucket_activate", [bucket, MOVE])  # sent at 1, not dropped yet
        assert (await list_subjects(store)).count(subject) == 1
        assert [r.action for r in await recover_moves(store)] == ["finished"]


async def test_a_reshard_with_one_failed_move_finishes_the_others_and_says_so(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """The moves ran in one gather: the first that failed raised out of it, and the process exit cancelled the
    moves still in flight mid-step, past their own rollback, leaving their buckets refusing writes."""
    from deploy.cluster import ReshardIncomplete

    s, cluster = private_cluster
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        first_moved = max(b for b, rs in store.bucket_map.items() if rs == 1)  # the plan takes it first
        await store.replicasets[1].call("bucket_start_send", [first_moved, 2, "another-move"])  # busy elsewhere
    with pytest.raises(ReshardIncomplete, match=r"1 of \d+ bucket moves to replica set 3 failed"):
        await cluster.add_replicaset(concurrency=4)
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        owners = await store.refresh_bucket_map()
        on_the_new_one = sum(rs == 3 for rs in owners.values())
        assert on_the_new_one == s.store.bucket_count // 3 - 1  # every other move was done
        transfers = await store.replicasets[1].call("bucket_transfers", [])
        assert [t[0] for t in transfers["sending"]] == [first_moved]  # only the one moving elsewhere
        await recover_moves(store)  # the move elsewhere left no trace there: given back
    # and the operator finishes the reshard without adding yet another replica set
    assert (await cluster.finish_reshard())["buckets_moved"] == 1
    async with FeatureStore(s.store, topology=cluster.topology) as store:
        owners = await store.refresh_bucket_map()
        assert sum(rs == 3 for rs in owners.values()) == s.store.bucket_count // 3
    assert (await cluster.finish_reshard())["buckets_moved"] == 0  # twice is safe


async def test_a_replica_set_that_does_not_start_is_not_recorded_and_adding_it_again_works(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """One of its replicas cannot listen (the port is taken) while its master runs: the error says nothing moved
    and that running the command again is safe, and it is. `rtrec down` stops the master it left running (it
    knew only the recorded replica sets)."""
    import socket

    from deploy import processes
    from deploy.cluster import ReplicasetNotAdded
    from feature_store.topology import replicaset_spec

    s, cluster = private_cluster
    new_master, new_replica = replicaset_spec(s.store, 3).instances[:2]
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((new_replica.host, new_replica.port))
        taken.listen()
        with pytest.raises(ReplicasetNotAdded, match=r"(?s)replica set 3 did not start.*again is safe"):
            await cluster.add_replicaset(concurrency=4)
    assert len(StoreCluster(s).topology) == 2  # not recorded: the stack still knows two
    async with FeatureStore(s.store, topology=StoreCluster(s).topology) as store:
        assert set((await store.refresh_bucket_map()).values()) == {1, 2}
    left_running = cluster.pid_path(new_master)
    assert processes.is_alive(processes.read_pid(left_running))
    StoreCluster(s).stop()  # as `rtrec down`
    assert not processes.is_alive(processes.read_pid(left_running))
    await StoreCluster(s).start()
    assert (await StoreCluster(s).add_replicaset(concurrency=4))["buckets_moved"] == s.store.bucket_count // 3


async def test_an_ops_call_waits_for_an_instance_slow_to_take_its_connection(
    private_cluster: tuple[Settings, StoreCluster],
) -> None:
    """`rtrec reshard --add-replicaset` under ingest on two cores failed at once: "cannot connect to
    storage-1-a". Ops calls gave an instance one second to greet; a master stalled for two seconds (as a busy
    one is) now gets as long as the call, up to five."""
    import os

    from deploy import processes

    _, cluster = private_cluster
    master = cluster.instance(cluster.master_name(cluster.topology[0]))
    pid = processes.read_pid(cluster.pid_path(master))
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    resume = asyncio.get_running_loop().call_later(2.0, os.kill, pid, signal.SIGCONT)
    try:
        await cluster.publish_topology()  # topology_set on every master, 5 s each
    finally:
        resume.cancel()
        os.kill(pid, signal.SIGCONT)
