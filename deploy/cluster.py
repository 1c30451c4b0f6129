"""The local Tarantool cluster: replica sets of a master and replicas with asynchronous replication.

Bootstrap is staged so no instance waits on credentials that do not exist yet: the master bootstraps alone
and creates the schema and the store user, the replicas join it, then every instance switches to the full
mesh of its replica set (so any replica can follow a promoted one). Finally the buckets are assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from deploy import processes
from deploy.masters import MasterRecord, MasterRecords
from deploy.settings import Settings
from feature_store.admin import bootstrap_buckets, store_stats
from feature_store.client import FeatureStore
from feature_store.errors import StoreError
from feature_store.health import instance_facts
from feature_store.rebalance import MoveResult, move_bucket, recover_moves
from feature_store.replicaset import InstanceConnection
from feature_store.topology import InstanceSpec, ReplicaSetSpec, replicaset_spec, topology_from

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
INSTANCE_SCRIPT = LUA_DIR / "instance.lua"
# The longest an ops call waits for an instance to take its connection. An instance busy with ingest on a
# small machine took over a second to greet, and a reshard under ingest failed at once on it.
OPS_CONNECT_TIMEOUT_S = 5.0


log = logging.getLogger(__name__)

REWIRE_EVERY_S = 2.0
_INSTANCE_LINE = re.compile(rb"^Instance: ([0-9a-f-]{36})$", re.MULTILINE)


def instance_uuid(directory: Path) -> str | None:
    """The instance UUID that a data directory's files were written by (the text header of every snapshot and
    log), or None when no file says it."""
    for path in sorted(directory.glob("*.snap"), reverse=True) + sorted(directory.glob("*.xlog"), reverse=True):
        with path.open("rb") as file:
            found = _INSTANCE_LINE.search(file.read(512))
        if found:
            return found.group(1).decode()
    return None


class StoreCluster:
    def __init__(self, settings: Settings, replicaset_count: int | None = None) -> None:
        self.settings = settings
        self.store = settings.store
        self.base_dir = settings.run_dir / "store"
        count = (
            replicaset_count
            if replicaset_count is not None
            else max(settings.store.replicasets, self._recorded_replicasets())
        )
        self.topology: list[ReplicaSetSpec] = topology_from(settings.store, count)

    def _recorded_replicasets(self) -> int:
        """Replica sets added by `rtrec reshard` live on in the run directory."""
        try:
            return int(json.loads((self.base_dir / "replicasets.json").read_text())["count"])
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    # ---- paths -----------------------------------------------------------------------------------------
    def work_dir(self, spec: InstanceSpec) -> Path:
        return (self.base_dir / spec.name).resolve()

    def pid_path(self, spec: InstanceSpec) -> Path:
        return self.base_dir / f"{spec.name}.pid"

    def log_path(self, spec: InstanceSpec) -> Path:
        return self.base_dir / f"{spec.name}.log"

    def instances(self) -> list[InstanceSpec]:
        return [i for rs in self.topology for i in rs.instances]

    def instance(self, name: str) -> InstanceSpec:
        for spec in self.instances():
            if spec.name == name:
                return spec
        raise KeyError(name)

    def peer_uri(self, spec: InstanceSpec) -> str:
        return f"{self.store.user}:{self.store.password}@{spec.uri}"

    @property
    def masters(self) -> MasterRecords:
        return MasterRecords(self.base_dir / "masters.json")

    def master_record(self, rs: ReplicaSetSpec) -> MasterRecord:
        """The replica set's master as recorded by the last failover (the bootstrap master before any)."""
        return self.masters.get(rs.id, rs.bootstrap_master.name)

    def master_name(self, rs: ReplicaSetSpec) -> str:
        return self.master_record(rs).master

    def _instance_settings(self, spec: InstanceSpec, rs: ReplicaSetSpec) -> dict[str, Any]:
        master = self.instance(self.master_name(rs))
        return {
            "name": spec.name,
            "listen": spec.uri,
            "work_dir": str(self.work_dir(spec)),
            "rs_id": rs.id,
            "read_only": spec.name != master.name,
            "replication": [self.peer_uri(i) for i in rs.instances],
            "bootstrap_replication": [] if spec == master else [self.peer_uri(master)],
            "memtx_memory": self.store.memtx_memory_mb * 1024 * 1024,
            "wal_mode": self.store.wal_mode,
            "user": self.store.user,
            "password": self.store.password,
            "users": {
                role: dict(zip(("user", "password"), self.store.credentials(role), strict=True))
                for role in ("ingest", "api")
            },
            "max_features_per_subject": self.store.max_features_per_subject,
            "max_names": self.store.max_names,
            "deny_subjects": self.store.deny_subjects,
            "expiry_interval": self.store.expiry_interval_s,
            "feature_sweep_interval": self.store.feature_sweep_interval_s,
            "followers_needed": self.store.followers_needed(len(rs.instances)),
        } | ({"tombstone_ttl": self.store.tombstone_ttl_s} if self.store.tombstone_ttl_s is not None else {})

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start_instance(self, spec: InstanceSpec) -> int:
        rs = self.topology[spec.rs_id - 1]
        pid = processes.read_pid(self.pid_path(spec))
        if processes.is_alive(pid):
            assert pid is not None
            return pid
        self._rebootstrap_if_deposed(spec, rs)
        env = {"RTREC_INSTANCE": json.dumps(self._instance_settings(spec, rs))}
        return processes.spawn(
            ["tarantool", str(INSTANCE_SCRIPT)], log_path=self.log_path(spec), pid_path=self.pid_path(spec), env=env
        )

    def _rebootstrap_if_deposed(self, spec: InstanceSpec, rs: ReplicaSetSpec) -> None:
        """A deposed master starts again only as a fresh replica of the current master: its old data directory
        is kept aside (``<name>.deposed-<time>``, for forensics) and it joins anew. What it held that no
        replica received comes back through a replay of the outage window, not through its stale WAL."""
        record = self.master_record(rs)
        if spec.name not in record.deposed:
            return
        directory = self.work_dir(spec)
        if directory.exists():
            directory.rename(directory.with_name(f"{spec.name}.deposed-{time.strftime('%Y%m%dT%H%M%S')}"))
        self.masters.undepose(rs.id, spec.name, rs.bootstrap_master.name)

    def kept_aside(self, rs: ReplicaSetSpec) -> list[str]:
        """The UUIDs of the replica set's instances whose data directories were set aside (``<name>.deposed-*``
        by a rejoin, ``<name>.rebuilt-*`` by `rtrec rebuild-replica`): instances that no longer exist."""
        uuids = []
        for spec in rs.instances:
            for kept in [*self.base_dir.glob(f"{spec.name}.deposed-*"), *self.base_dir.glob(f"{spec.name}.rebuilt-*")]:
                uuid = instance_uuid(kept)
                if uuid is not None:
                    uuids.append(uuid)
        return uuids

    async def forget_replaced(self, *replicasets: ReplicaSetSpec) -> dict[int, list[str]]:
        """Strike the registrations of instances that rejoined or were rebuilt under a new UUID
        (``forget_replicas``): each kept a garbage-collection hold on its peers' write-ahead logs for good, and
        an instance id. Read from the directories set aside, so a start that failed before this is made good by
        the next one; a replica set whose peers do not all follow its master waits for a later start (logged).
        ``replicasets``: only these (default: all)."""
        removed: dict[int, list[str]] = {}
        for rs in replicasets or self.topology:
            uuids = self.kept_aside(rs)
            if not uuids:
                continue
            try:
                answer = await self.call_instance(
                    self.instance(self.master_name(rs)), "forget_replicas", [uuids], timeout=10.0
                )
            except StoreError as exc:
                log.warning("old registrations of replica set %d stay until a later start: %s", rs.id, exc)
                continue
            if answer.get("deferred"):
                log.warning(
                    "old registrations of replica set %d stay until a later start: %s", rs.id, answer["deferred"]
                )
            removed[rs.id] = list(answer.get("removed") or [])
        return removed

    async def call_instance(self, spec: InstanceSpec, fn: str, args: list[Any], *, timeout: float) -> Any:
        """One procedure call on one instance over a short-lived connection (ops calls, not the hot path). The
        connection may take as long as the call, up to ``OPS_CONNECT_TIMEOUT_S``."""
        connect_timeout = min(timeout, OPS_CONNECT_TIMEOUT_S)
        conn = InstanceConnection(spec, self.store.user, self.store.password, connect_timeout=connect_timeout)
        try:
            return await conn.call(fn, args, timeout=timeout)
        finally:
            await conn.close()

    async def wait_ready(self, spec: InstanceSpec, timeout: float) -> dict[str, Any]:
        conn = InstanceConnection(spec, self.store.user, self.store.password, connect_timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not processes.is_alive(processes.read_pid(self.pid_path(spec))):
                    raise processes.ProcessError(
                        f"{spec.name} exited during start:\n{processes.tail(self.log_path(spec))}{self._remedy(spec)}"
                    )
                try:
                    info: dict[str, Any] = await conn.call("ping", [], timeout=1.0)
                    return info
                except StoreError:
                    if time.monotonic() > deadline:
                        raise processes.ProcessError(
                            f"{spec.name} not ready in {timeout:.0f}s:\n{processes.tail(self.log_path(spec))}"
                        ) from None
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def _remedy(self, spec: InstanceSpec) -> str:
        """What to do about an instance that does not start (its files damaged, as its log says)."""
        rs = self.topology[spec.rs_id - 1]
        if self.master_name(rs) == spec.name:
            return f"\nIf its files are damaged: `rtrec failover --replicaset {rs.id}`, then `rtrec up` rebuilds it."
        return f"\nIf its files are damaged: `rtrec rebuild-replica {spec.name}` starts it afresh from its master."

    async def start(self, timeout: float = 60.0) -> None:
        """Start every instance (idempotent): each replica set's recorded master first, then the others (a fresh
        one joins that master), wire the full mesh, bootstrap buckets on a new cluster.

        Returns once every replica holds what its master holds, bucket ownership included: a master lost right
        after a start must not leave its replica set's buckets unknown to a client that starts then."""
        masters = [self.instance(self.master_name(rs)) for rs in self.topology]
        for spec in masters:
            self.start_instance(spec)
        await asyncio.gather(*(self.wait_ready(spec, timeout) for spec in masters))
        replicas = [i for i in self.instances() if i not in masters]
        for spec in replicas:
            self.start_instance(spec)
        await asyncio.gather(*(self.wait_ready(spec, timeout) for spec in replicas))
        await self.wire_full_mesh(*self.topology)
        await self.wait_replication(timeout)
        await self.publish_topology()
        async with self.client() as store:
            await bootstrap_buckets(store)
        await self.wait_synced(timeout)
        await self.forget_replaced()

    def topology_document(self) -> dict[str, Any]:
        return {
            "replicasets": [
                {"id": rs.id, "instances": [{"name": i.name, "host": i.host, "port": i.port} for i in rs.instances]}
                for rs in self.topology
            ]
        }

    async def publish_topology(self) -> None:
        """Every master stores the cluster's replica sets, so clients can discover ones added later."""
        document = self.topology_document()
        for rs in self.topology:
            spec = self.instance(self.master_name(rs))
            await self.call_instance(spec, "topology_set", [document], timeout=5.0)

    async def add_replicaset(self, *, concurrency: int = 4) -> dict[str, Any]:
        """Start one more replica set and move it an even share of buckets while the cluster keeps serving.
        Writers of a bucket in flight get WRONG_BUCKET and retry; records keep their (id, rs_id) keys."""
        new_id = len(self.topology) + 1
        self.topology = topology_from(self.store, new_id)
        try:
            await self.start()
        except (StoreError, processes.ProcessError) as exc:
            self.topology = topology_from(self.store, new_id - 1)
            with contextlib.suppress(StoreError, processes.ProcessError):  # it may have been published already
                await self.publish_topology()
            raise ReplicasetNotAdded(
                f"replica set {new_id} did not start: {type(exc).__name__}: {exc}\nNo bucket moved and the replica"
                " set is not recorded; running `rtrec reshard --add-replicaset` again is safe (it starts the same"
                " one), and `rtrec down` stops what it started."
            ) from exc
        (self.base_dir / "replicasets.json").write_text(json.dumps({"count": new_id}))
        return await self._fill_newest(concurrency)

    async def finish_reshard(self, *, concurrency: int = 4) -> dict[str, Any]:
        """`rtrec reshard --rebalance`: move the newest replica set the rest of its even share, what a reshard
        whose moves failed in part (or whose process died) left undone. The plan comes from where the buckets
        are now, so running it twice is safe; before it, an operator could only add yet another replica set."""
        await self.start()
        return await self._fill_newest(concurrency)

    async def _fill_newest(self, concurrency: int) -> dict[str, Any]:
        newest = len(self.topology)
        async with self.client() as store:
            moved = await rebalance(store, newest, concurrency=concurrency)
        return {"replicaset": newest, "buckets_moved": len(moved), "records_moved": sum(m.records for m in moved)}

    async def recover_moves(self) -> dict[str, Any]:
        """`rtrec reshard --recover`: settle buckets an interrupted move left in flight."""
        async with self.client() as store:
            results = await recover_moves(store)
        return {"buckets": [vars(r) for r in results], "left": sum(r.action == "left" for r in results)}

    async def wire_full_mesh(self, *replicasets: ReplicaSetSpec) -> None:
        """Every instance of ``replicasets`` follows every other (a fresh one joined its master only)."""
        for rs in replicasets:
            uris = [self.peer_uri(i) for i in rs.instances]
            for spec in rs.instances:
                await self.call_instance(spec, "set_replication", [uris], timeout=30.0)

    async def wait_replication(self, timeout: float = 30.0) -> None:
        """Wait until every instance follows every peer of its replica set. Every ``REWIRE_EVERY_S`` the mesh is
        wired again: an upstream stopped on an error (a peer rebuilt while this instance was down, whose log
        starts after this instance's position) follows once the instance has caught up from another peer."""
        deadline = time.monotonic() + timeout
        rewired = time.monotonic()
        while True:
            lagging = await self._not_following()
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise processes.ProcessError(f"replication not running on: {', '.join(lagging)}")
            if time.monotonic() - rewired > REWIRE_EVERY_S:
                rewired = time.monotonic()
                with contextlib.suppress(StoreError):
                    await self.wire_full_mesh(*self.topology)
            await asyncio.sleep(0.2)

    async def _not_following(self) -> list[str]:
        lagging = []
        async with self.client(bootstrap=False) as store:
            for rs_stats in (await store_stats(store)).values():
                for name, stats in rs_stats.items():
                    if "error" in stats:
                        lagging.append(name)
                        continue
                    peers = [r for r in stats["replication"].values() if r.get("uuid") and "upstream" in r]
                    if len(peers) < self.store.instances_per_replicaset - 1 or any(
                        r["upstream"].get("status") != "follow" for r in peers
                    ):
                        lagging.append(name)
        return lagging

    async def wait_synced(self, timeout: float = 30.0, only: InstanceSpec | None = None) -> None:
        """Wait until every replica's vclock (or ``only`` this instance's) has caught up with its master's
        (tests compare replicas)."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.client(bootstrap=False) as store:
                stats = await store_stats(store)
            behind = []
            for rs_stats in stats.values():
                masters = [s for s in rs_stats.values() if "error" not in s and not s["ro"]]
                if not masters:
                    continue
                master_vclock = masters[0]["vclock"]
                for name, s in rs_stats.items():
                    if "error" in s or (only is not None and name != only.name):
                        continue
                    if any(s["vclock"].get(k, 0) < v for k, v in master_vclock.items()):
                        behind.append(name)
            if not behind:
                return
            if time.monotonic() > deadline:
                raise processes.ProcessError(f"replicas not synced: {behind}")
            await asyncio.sleep(0.05)

    def stop(self) -> int:
        """Stop every instance (replicas first), those of a replica set an unfinished ``add_replicaset`` started
        but did not record included. Safe to call twice; returns how many were running."""
        stopped = 0
        for rs in [*self.topology, replicaset_spec(self.store, len(self.topology) + 1)]:
            for spec in reversed(rs.instances):
                stopped += processes.stop(self.pid_path(spec))
        return stopped

    async def failover(self, rs_id: int) -> dict[str, Any]:
        """Make the most up-to-date live replica the master, fenced and caught up (see ``deploy.failover``)."""
        from deploy.failover import fail_over

        return await fail_over(self, rs_id)

    def kill(self, name: str, sig: int) -> None:
        """Send a signal to one instance (failure drills)."""
        import os

        pid = processes.read_pid(self.pid_path(self.instance(name)))
        if pid is not None and processes.is_alive(pid):
            os.kill(pid, sig)

    def client(self, *, bootstrap: bool = True) -> _ClusterClient:
        return _ClusterClient(self, bootstrap)

    async def status(self) -> list[dict[str, Any]]:
        """The store section of ``rtrec status --json``: per instance whether its process runs, whether it
        answers, its role, memory use and how its replication peers are followed (asked concurrently)."""
        by_port = {spec.port: spec.name for spec in self.instances()}

        async def one(spec: InstanceSpec) -> dict[str, Any]:
            # asked over the network, not by pid file: status may run on another host than the instances
            try:
                stats: dict[str, Any] | None = await self.call_instance(spec, "stats", [], timeout=1.0)
            except StoreError:
                stats = None
            pid = processes.read_pid(self.pid_path(spec))
            return {
                "name": spec.name,
                "uri": spec.uri,
                "pid": pid if processes.is_alive(pid) else None,
                "alive": stats is not None,
                **(instance_facts(stats, by_port) if stats is not None else {"role": None, "ro": None}),
            }

        # every instance at once: read one replica set after another, a bucket move finishing in between was
        # counted on both (status checks that every bucket is active on exactly one replica set)
        answers = await asyncio.gather(*(one(spec) for rs in self.topology for spec in rs.instances))
        by_name = {answer["name"]: answer for answer in answers}
        return [{"id": rs.id, "instances": [by_name[spec.name] for spec in rs.instances]} for rs in self.topology]


async def rebalance(store: FeatureStore, target_rs: int, *, concurrency: int = 4) -> list[MoveResult]:
    """Move buckets to ``target_rs`` from the fullest replica sets until it holds an even share."""
    owners = await store.refresh_bucket_map()
    counts = {rs_id: 0 for rs_id in store.replicasets}
    for rs_id in owners.values():
        counts[rs_id] += 1
    share = store.settings.bucket_count // len(counts)
    plan: list[int] = []
    by_rs = {rs_id: sorted(b for b, o in owners.items() if o == rs_id) for rs_id in counts}
    while counts[target_rs] + len(plan) < share:
        donor = max((r for r in counts if r != target_rs), key=lambda r: len(by_rs[r]))
        plan.append(by_rs[donor].pop())
    semaphore = asyncio.Semaphore(concurrency)

    async def move(bucket: int) -> MoveResult:
        async with semaphore:
            return await move_bucket(store, bucket, target_rs, refresh=False)

    # every move runs to its end: one that failed must not cancel the others mid-step (a cancelled move skipped
    # its own rollback and left its bucket refusing writes until a recover)
    outcomes = await asyncio.gather(*(move(b) for b in plan), return_exceptions=True)
    await store.refresh_bucket_map()
    failed = [(b, o) for b, o in zip(plan, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        bucket, first = failed[0]
        raise ReshardIncomplete(
            f"{len(failed)} of {len(plan)} bucket moves to replica set {target_rs} failed (bucket {bucket}: "
            f"{type(first).__name__}: {first}); the others are done and the failed buckets stay where they were. "
            "Run `rtrec reshard --recover` to settle any move left in flight, then `rtrec reshard --rebalance` to "
            "move the rest"
        )
    return [o for o in outcomes if isinstance(o, MoveResult)]


class ReplicasetNotAdded(processes.ProcessError):
    """The replica set a reshard adds did not start; nothing moved."""


class ReshardIncomplete(processes.ProcessError):
    """Some bucket moves of a reshard failed; the rest were done."""


class _ClusterClient:
    """``async with cluster.client() as store``: a FeatureStore over this cluster's topology."""

    def __init__(self, cluster: StoreCluster, bootstrap: bool) -> None:
        self._cluster = cluster
        self._bootstrap = bootstrap
        self._store: FeatureStore | None = None

    async def __aenter__(self) -> FeatureStore:
        self._store = FeatureStore(self._cluster.store, topology=self._cluster.topology)
        if self._bootstrap:
            await self._store.start()
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        assert self._store is not None
        await self._store.stop()
