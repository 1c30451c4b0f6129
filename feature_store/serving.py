"""What the recommendation manager asks of the store, as one small object: a client's facts read under a
deadline from the master or, when the master is slow or down, from a replica that can show it is fresh
(``freshness``), and the recommendation cache with conditional puts (``lua/cache.lua``).

Hedged read: the master is asked first; if it has not answered after ``hedge_after_s``, every other copy of
the replica set is asked too (with freshness), and the first trustworthy answer wins. No trustworthy answer
before the deadline raises ``NoTrustedCopy``: the caller must then not guess (fail closed).

A master that answered another read within the last ``BUSY_MASTER_SILENCE_S`` is loaded, not stalled: the read
keeps waiting for it instead of hedging, because under overload hedging would triple the store's work exactly
when it has too much (every slow read asking three copies). Once the master has been silent that long, reads
hedge as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feature_store.client import FeatureStore
from feature_store.errors import NoOwner, StoreError, StoreUnavailable
from feature_store.freshness import CopyRead, trusted_copy
from feature_store.records import Value
from feature_store.replicaset import InstanceConnection, ReplicaSetClient, in_background
from feature_store.specs import AggregateSpec

BUSY_MASTER_SILENCE_S = 0.2
MAP_REFRESH_INTERVAL_S = 1.0  # between background refreshes of the bucket map for a bucket nobody owns


class NoTrustedCopy(StoreUnavailable):
    """No copy of the client's replica set answered with facts that can be trusted within the deadline."""


@dataclass(frozen=True)
class ClientRead:
    values: list[Value | None]
    status_gen: str  # the client's status generation at the read (opaque, for the conditional cache put)
    read_at: float  # the answering instance's clock at the read
    source: str  # "master" or "replica <name>"
    cached: Any = None  # the master's cached answer, when asked for and present (then ``values`` is empty)


class ServingStore:
    def __init__(self, store: FeatureStore, *, hedge_after_s: float = 0.05) -> None:
        self.store = store
        self.hedge_after_s = hedge_after_s
        self._master_answered_at: dict[int, float] = {}  # replica set id -> monotonic time of its last answer
        self._map_refresh: asyncio.Future[Any] | None = None
        self._map_refreshed_at = float("-inf")

    # ---- a client's facts ------------------------------------------------------------------------------
    async def read_client(
        self, subject: str, specs: Sequence[AggregateSpec], now: float, *, timeout: float, with_cache: bool = False
    ) -> ClientRead:
        """The client's facts (``specs`` at ``now``) from the master, or from a replica that shows it is fresh
        when the master is slow. ``with_cache``: the master answers with its cached answer instead when it has
        one (``ClientRead.cached``), in the same round trip."""
        wire = [s.wire for s in specs]
        deadline = time.monotonic() + timeout
        # before the call is started: a bucket nobody owns (its replica set down at the API's start) raises here,
        # where it left the call running on its own, refreshing the bucket map for every request
        try:
            rs = self._replicaset(subject)
        except NoOwner:
            self._refresh_bucket_map_soon()  # the replica set back, or a move done: its clients are served again
            raise
        rs_id = rs.id
        # write=True routes to the master whatever ``read_from`` says: the status is read where status changes
        # are written, or from a copy that proves its freshness below
        master = asyncio.ensure_future(
            self.store.call_routed(
                subject, "client_read", [subject, now, wire, False, with_cache], write=True, timeout=timeout
            )
        )
        master.add_done_callback(lambda done: self._note_master_answer(rs_id, done))
        replicas: asyncio.Future[list[CopyRead]] | None = None
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(master), timeout=min(self.hedge_after_s, timeout))
            await self._wait_while_master_busy(rs_id, master, deadline)
            while True:
                demoted = False
                if master.done() and master.exception() is None:
                    answer = master.result()
                    if not answer.get("ro"):
                        gen, read_at = str(answer["status_gen"]), float(answer["read_at"])
                        return ClientRead(list(answer["values"]), gen, read_at, "master", answer.get("cached"))
                    # the instance taken for the master was demoted (a switchover): ask who it is next time,
                    # and let the freshness rule judge every copy now
                    demoted = True
                    self._replicaset(subject).forget_master()
                if replicas is None:
                    replicas = asyncio.ensure_future(
                        self._other_copies(subject, now, wire, deadline, include_taken_master=demoted)
                    )
                if replicas.done():
                    trusted = trusted_copy(replicas.result())
                    if trusted is not None:
                        source = "master" if not trusted.ro else f"replica {trusted.instance}"
                        return ClientRead(trusted.values, trusted.status_gen, trusted.read_at, source)
                    if master.done():
                        raise NoTrustedCopy(f"no copy of {subject}'s replica set answered with fresh facts")
                pending = [f for f in (master, replicas) if not f.done()]
                left = deadline - time.monotonic()
                if left <= 0 or not pending:
                    raise NoTrustedCopy(f"no copy of {subject}'s replica set answered in time")
                await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not master.done():  # silent past the budget: a host gone keeps its socket, so look for a master
                rs.suspect_master()  # in the background (at most once a second) while this one is still used
            for future in (master, replicas):
                if future is not None and not future.done():
                    future.cancel()
            if master.done() and not master.cancelled():
                master.exception()  # retrieved: a failed master read is expected here, not an error to log

    def _refresh_bucket_map_soon(self) -> None:
        """One background refresh of the bucket map at a time, at most one per ``MAP_REFRESH_INTERVAL_S``."""
        if self._map_refresh is not None and not self._map_refresh.done():
            return
        if time.monotonic() - self._map_refreshed_at < MAP_REFRESH_INTERVAL_S:
            return
        self._map_refreshed_at = time.monotonic()
        self._map_refresh = in_background(self.store.refresh_bucket_map())

    def _note_master_answer(self, rs_id: int, done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._master_answered_at[rs_id] = time.monotonic()

    async def _wait_while_master_busy(self, rs_id: int, master: asyncio.Future[Any], deadline: float) -> None:
        """Wait for a master that keeps answering other reads (loaded, not stalled), until it has been silent
        for ``BUSY_MASTER_SILENCE_S`` or the deadline comes."""
        while not master.done():
            silent_for = time.monotonic() - self._master_answered_at.get(rs_id, float("-inf"))
            wait = min(BUSY_MASTER_SILENCE_S - silent_for, deadline - time.monotonic())
            if wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(master), timeout=wait)

    def _replicaset(self, subject: str) -> ReplicaSetClient:
        return self.store.replicaset_of_bucket(self.store.bucket_id_for(subject))

    async def _other_copies(
        self, subject: str, now: float, wire: list[Any], deadline: float, *, include_taken_master: bool = False
    ) -> list[CopyRead]:
        """Every instance of the replica set but the one we take for the master (all of them when that one
        turned out read-only), asked with freshness. Waits for all, but no longer than ``hedge_after_s``
        after the first answer (a stalled sibling must not eat the budget) and never past the deadline."""
        bucket = self.store.bucket_id_for(subject)
        rs = self.store.replicaset_of_bucket(bucket)
        taken = None if include_taken_master else rs.master_name
        others = [i for i in rs.instances if i.spec.name != taken]

        async def one(instance: InstanceConnection) -> CopyRead | None:
            left = max(deadline - time.monotonic(), 0.001)
            try:  # the bound covers connecting too: a stalled instance accepts TCP but never greets
                answer = await asyncio.wait_for(
                    instance.call("client_read", [bucket, subject, now, wire, True], timeout=left), timeout=left
                )
            except (StoreError, TimeoutError):
                return None
            return CopyRead.from_wire(instance.spec.name, answer)

        pending = {asyncio.ensure_future(one(i)) for i in others}
        copies: list[CopyRead] = []
        grace_until: float | None = None
        try:
            while pending:
                until = deadline if grace_until is None else min(deadline, grace_until)
                left = until - time.monotonic()
                if left <= 0:
                    break
                done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    copy = future.result()
                    if copy is not None:
                        copies.append(copy)
                        grace_until = grace_until or time.monotonic() + self.hedge_after_s
        finally:
            for future in pending:
                future.cancel()
        return copies

    # ---- the recommendation cache ------------------------------------------------------------------------
    async def cache_get(self, subject: str, *, timeout: float) -> Any:
        """The cached answer for ``subject`` or None (missing, cleared or expired). Master only: the cache is
        cleared on the master in the same transaction as a status change."""
        args = [subject, time.time()]
        return await self.store.call_routed(subject, "cache_get", args, write=True, timeout=timeout)

    async def cache_put(self, subject: str, payload: Any, ttl_s: float, read: ClientRead) -> bool:
        """Store an answer computed from ``read``; False when refused because the client's status changed
        since that read (or the read is too old). An answer read from a replica is never cached: the cache
        holds only what the master would answer."""
        if read.source != "master" or read.cached is not None:  # a cache hit carries no facts to vouch for
            return False
        args = [subject, time.time() + ttl_s, payload, read.status_gen, read.read_at]
        return bool(await self.store.call_routed(subject, "cache_put", args, write=True))

    async def cache_invalidate(self, subject: str) -> None:
        await self.store.call_routed(subject, "cache_invalidate", [subject], write=True)
