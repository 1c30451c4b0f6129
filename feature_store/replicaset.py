"""Connections to one replica set: finds the current master by asking the instances (so a promoted replica
is picked up without a restart), calls storage procedures, and translates asynctnt errors at one boundary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import asynctnt
from asynctnt.exceptions import TarantoolError

from feature_store.errors import (
    AccessDenied,
    BadArgument,
    ReadOnlyInstance,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    from_storage,
)
from feature_store.topology import InstanceSpec, ReplicaSetSpec

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.05


class InstanceConnection:
    """One instance; connects lazily and reconnects on the next call after a failure."""

    def __init__(self, spec: InstanceSpec, user: str, password: str, connect_timeout: float) -> None:
        self.spec = spec
        self._user = user
        self._password = password
        self._connect_timeout = connect_timeout
        self._conn: asynctnt.Connection | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> asynctnt.Connection:
        if self._conn is not None and self._conn.is_connected:
            return self._conn
        async with self._lock:
            if self._conn is not None and self._conn.is_connected:
                return self._conn
            if self._conn is not None:
                await self._conn.disconnect()
            conn = asynctnt.Connection(
                host=self.spec.host,
                port=self.spec.port,
                username=self._user,
                password=self._password,
                connect_timeout=self._connect_timeout,
                reconnect_timeout=0,
                fetch_schema=False,
                auto_refetch_schema=False,
            )
            try:
                await conn.connect()
            except (TimeoutError, OSError, TarantoolError) as exc:
                raise StoreUnavailable(f"cannot connect to {self.spec.name} ({self.spec.uri}): {exc}") from exc
            self._conn = conn
            return conn

    async def call(self, fn: str, args: list[Any], timeout: float) -> Any:
        """Call ``rtrec.<fn>``; returns its first result or raises the mapped storage error."""
        conn = await self._connected()
        try:
            response = await conn.call(f"rtrec.{fn}", args, timeout=max(timeout, 0.001))
        except TimeoutError as exc:
            raise StoreTimeout(f"{self.spec.name}: {fn} timed out after {timeout:.3f}s") from exc
        except TarantoolError as exc:
            message = str(exc)
            if "read-only" in message or "read_only" in message:
                raise ReadOnlyInstance(f"{self.spec.name} is read-only: {message}") from exc
            if "access" in message.lower() and "denied" in message.lower():
                raise AccessDenied(f"{self.spec.name}: {fn}: {message}") from exc
            raise StoreUnavailable(f"{self.spec.name}: {fn} failed: {message}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"{self.spec.name}: {fn} failed: {exc}") from exc
        except OverflowError as exc:  # an integer msgpack cannot encode (beyond 64 bits)
            raise BadArgument(f"{fn}: an argument cannot be sent to the store: {exc}") from exc
        body = list(response)
        result = body[0] if body else None
        err = body[1] if len(body) > 1 else None
        if err is not None:
            raise from_storage(err)
        return result

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None


def choose_master(answers: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The instance to write to, from ``ping`` answers (name, {ro, master, epoch}); None when there is none."""
    writable = [name for name, info in answers if not info.get("ro", True)]
    records = [(info.get("epoch") or 0, info.get("master")) for _, info in answers if info.get("master")]
    if records:
        _, recorded = max(records, key=lambda record: record[0])
        if recorded in writable:
            if len(writable) > 1:
                log.error("several writable instances %s; writing only to %s, the recorded master", writable, recorded)
            return str(recorded)
        if writable:
            log.error("writable instances %s are not the recorded master %s: not writing to them", writable, recorded)
        return None
    if len(writable) > 1:
        log.error("several writable instances %s and no master record; writing to none", writable)
        return None
    return writable[0] if writable else None


SUSPECT_INTERVAL_S = 1.0  # between background looks for the master after it did not answer in time


T = TypeVar("T")


def in_background(awaitable: Awaitable[T]) -> asyncio.Future[T]:
    """Run ``awaitable`` as a task whose outcome is read even when nobody awaits it, so a failure is not logged
    as never retrieved (callers that wait for it see it as usual)."""
    future = asyncio.ensure_future(awaitable)
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ReplicaSetClient:
    """Routes calls of one replica set: writes to the master, reads to the master or a replica."""

    def __init__(
        self,
        spec: ReplicaSetSpec,
        user: str,
        password: str,
        *,
        request_timeout: float = 5.0,
        read_from: str = "master",
    ) -> None:
        self.spec = spec
        self.request_timeout = request_timeout
        self.read_from = read_from
        self.instances = [InstanceConnection(i, user, password, connect_timeout=1.0) for i in spec.instances]
        self._master: InstanceConnection | None = None
        self._discovery: asyncio.Future[InstanceConnection] | None = None  # the one discovery under way
        self._suspected_at = float("-inf")

    @property
    def id(self) -> int:
        return self.spec.id

    @property
    def master_name(self) -> str | None:
        return self._master.spec.name if self._master else None

    def forget_master(self) -> None:
        """The instance taken for the master turned out not to be one: ask again on the next call."""
        self._master = None

    async def discover_master(self, *, unless_known: bool = False) -> InstanceConnection:
        """Ask every instance whether it is writable and who the replica set's recorded master is (by epoch,
        see lua/mastership.lua). The master is the writable instance the newest record names; a writable
        instance the newest record does not name (a deposed master that came back writable) is never used.

        One discovery runs at a time and callers share it; a caller that gives up (a request at its deadline)
        leaves it running. Each probe may take a second when a copy is stalled or its host gone: cancelled with
        every request of half a second, a discovery never finished and the replica set was served degraded.
        ``unless_known``: a master already known will do."""
        if unless_known and self._master is not None:
            return self._master
        return await asyncio.shield(self._start_discovery())

    def suspect_master(self) -> None:
        """The master did not answer in time: a host gone keeps its socket open, and calls would wait on it even
        after a replica was promoted. Look for the master in the background (at most once per
        ``SUSPECT_INTERVAL_S``); calls keep going to the one known until another is found (a loaded master that
        answers late stays the master: forgetting it sent every caller into discovery)."""
        if self._discovery is not None and not self._discovery.done():
            return
        if time.monotonic() - self._suspected_at < SUSPECT_INTERVAL_S:
            return
        self._suspected_at = time.monotonic()
        self._start_discovery()

    def _start_discovery(self) -> asyncio.Future[InstanceConnection]:
        if self._discovery is None or self._discovery.done() or self._discovery.get_loop() is not _running_loop():
            self._discovery = in_background(self._discover())  # every caller may give up on it
        return self._discovery

    async def _discover(self) -> InstanceConnection:
        async def probe(instance: InstanceConnection) -> tuple[InstanceConnection, dict[str, Any] | None]:
            try:
                return instance, await instance.call("ping", [], timeout=1.0)
            except StoreError:
                return instance, None

        answers = [(i, info) for i, info in await asyncio.gather(*(probe(i) for i in self.instances)) if info]
        chosen = choose_master([(i.spec.name, info) for i, info in answers])
        if chosen is None:  # the master known, if any, stays: calls to it find out (read-only, lost) themselves
            raise StoreUnavailable(f"replica set {self.id} has no writable master")
        self._master = next(i for i, _ in answers if i.spec.name == chosen)
        return self._master

    async def call(self, fn: str, args: list[Any], *, write: bool = True, timeout: float | None = None) -> Any:
        """Call a procedure, retrying retriable failures (master moved, connection lost) until the deadline."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.request_timeout)
        last_error: StoreError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreTimeout(f"replica set {self.id}: {fn} did not succeed in time: {last_error}")
            target = None
            try:
                target = await self._target(write)
                return await target.call(fn, args, timeout=remaining)
            except StoreTimeout:
                if target is not None and target is self._master:
                    self.suspect_master()
                raise
            except (ReadOnlyInstance, StoreUnavailable) as exc:
                last_error = exc
                self._master = None
                await asyncio.sleep(min(RETRY_PAUSE_S, max(deadline - time.monotonic(), 0)))

    async def _target(self, write: bool) -> InstanceConnection:
        if not write and self.read_from == "replica":
            if self._master is None:  # a reader that never wrote must still know which copy is the master
                with contextlib.suppress(StoreUnavailable):
                    await self.discover_master()
            replicas = [i for i in self.instances if i is not self._master]
            random.shuffle(replicas)
            for replica in replicas:
                try:
                    await replica._connected()
                    return replica
                except StoreUnavailable:
                    continue
        if self._master is None:
            return await self.discover_master(unless_known=True)
        return self._master

    async def call_any(self, fn: str, args: list[Any], timeout: float = 2.0) -> Any:
        """Call a read-only procedure on the master if one is known, else on the first copy that answers: what
        every copy has (bucket ownership, the stored topology) must not depend on the master being alive."""
        known = [self._master] if self._master is not None else []
        last_error: StoreError | None = None
        for instance in [*known, *(i for i in self.instances if i is not self._master)]:
            try:
                return await instance.call(fn, args, timeout=timeout)
            except StoreError as exc:
                last_error = exc
        raise StoreUnavailable(f"replica set {self.id}: no copy answered {fn}: {last_error}")

    async def call_each(self, fn: str, args: list[Any], timeout: float = 2.0) -> dict[str, Any]:
        """Call a procedure on every instance (stats, status); an unreachable one maps to its error text."""

        async def one(instance: InstanceConnection) -> tuple[str, Any]:
            try:
                return instance.spec.name, await instance.call(fn, args, timeout=timeout)
            except StoreError as exc:
                return instance.spec.name, {"error": str(exc)}

        return dict(await asyncio.gather(*(one(i) for i in self.instances)))

    async def close(self) -> None:
        if self._discovery is not None and not self._discovery.done() and self._discovery.get_loop() is _running_loop():
            self._discovery.cancel()
        await asyncio.gather(*(i.close() for i in self.instances))
