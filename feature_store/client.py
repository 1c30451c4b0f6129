"""FeatureStore: the async client every other part uses to write, read and aggregate features.

Routing follows vshard: ``bucket_id_for(subject)`` picks the bucket, the bucket map (learned from the
storages' ``_bucket`` spaces) picks the replica set. Writes are grouped per replica set and sent in
batches; a WRONG_BUCKET answer (a bucket moved) refreshes the map and retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feature_store.buckets import bucket_id_for
from feature_store.config import StoreRole, StoreSettings
from feature_store.errors import BadArgument, NoOwner, StoreError, StoreUnavailable, WrongBucket
from feature_store.records import Feature, Fence, StoredFeature, Value
from feature_store.replicaset import ReplicaSetClient
from feature_store.specs import AggregateSpec
from feature_store.topology import InstanceSpec, ReplicaSetSpec, topology_from
from feature_store.ttl import DAY, TtlPolicy

log = logging.getLogger(__name__)

ROUTING_ATTEMPTS = 5
# Times per `aggregate_at` call: the store's limit (lua/constants.lua), so a call holds its master a few ms.
AGGREGATE_MAX_TIMES = 64


@dataclass
class WriteResult:
    written: int = 0
    unchanged: int = 0
    tombstoned: int = 0
    # Rows of an earlier version of a resent transaction that the new version no longer has, deleted.
    superseded: int = 0
    # Features the store refused, with the storage's reason code (SUBJECT_TOO_FAT, SUBJECT_DENIED).
    refused: list[tuple[Feature, str]] = field(default_factory=list)

    def add(self, other: WriteResult) -> None:
        self.written += other.written
        self.unchanged += other.unchanged
        self.tombstoned += other.tombstoned
        self.superseded += other.superseded
        self.refused.extend(other.refused)


@dataclass(frozen=True)
class ReplaceResult:
    applied: bool
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    tombstoned: int = 0  # rows skipped because their object was deleted (as put_features skips them)
    stored_version: float | None = None


def object_chunks(group: list[tuple[Feature, list[Any]]], batch: int) -> list[list[tuple[Feature, list[Any]]]]:
    """``group`` cut into chunks of about ``batch`` rows, never inside one object's run of rows: the store takes
    a transaction's rows in one call as its whole version (SUPERSEDING_SOURCES), so half of them would look like
    a correction that dropped the other half."""
    chunks, start = [], 0
    while start < len(group):
        end = min(start + batch, len(group))
        while end < len(group) and _object_of(group[end][0]) == _object_of(group[end - 1][0]):
            end += 1
        chunks.append(group[start:end])
        start = end
    return chunks


def _object_of(feature: Feature) -> tuple[str, str, str]:
    return feature.subject, feature.source, feature.object


def compact(value: Value) -> Value:
    """A whole float goes over the wire (and into the store) as an integer: msgpack spends 5 bytes on a 32-bit
    integer and 9 on any double, in every tuple on three copies."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


class FeatureStore:
    def __init__(
        self,
        settings: StoreSettings,
        *,
        ttl: TtlPolicy | None = None,
        topology: Sequence[ReplicaSetSpec] | None = None,
        role: StoreRole = "ops",
    ) -> None:
        """``role`` picks the store user: ``ingest`` (consumers), ``api`` (the HTTP API) or ``ops``."""
        self.settings = settings
        self._user, self._password = settings.credentials(role)
        self.ttl = ttl or TtlPolicy.from_settings()
        specs = list(topology) if topology is not None else topology_from(settings)
        self.replicasets: dict[int, ReplicaSetClient] = {
            spec.id: ReplicaSetClient(
                spec,
                self._user,
                self._password,
                request_timeout=settings.request_timeout_s,
                read_from=settings.read_from,
            )
            for spec in specs
        }
        self._bucket_owner: dict[int, int] = {}
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        await self.refresh_bucket_map()
        self._started = True

    async def stop(self) -> None:
        await asyncio.gather(*(rs.close() for rs in self.replicasets.values()))
        self._started = False

    async def __aenter__(self) -> FeatureStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- routing ---------------------------------------------------------------------------------------
    def bucket_id_for(self, subject: str) -> int:
        return bucket_id_for(subject, self.settings.bucket_count)

    async def refresh_bucket_map(self) -> dict[int, int]:
        """Learn bucket -> replica set from the storages' `_bucket` spaces (an active owner beats one still
        sending the bucket away), joining replica sets this client has not met yet (added by resharding).

        Any copy of a replica set may answer (ownership is replicated): a dead master must not stop an API from
        starting. A replica set no copy of which answers keeps the buckets it was known to own (none, at the
        start): calls for them fail, every other client is served. Only when none answers does this fail."""
        await self._learn_topology()

        async def owned(rs: ReplicaSetClient) -> tuple[int, dict[str, list[int]] | None]:
            try:
                return rs.id, await rs.call_any("buckets_owned", [], timeout=self.settings.request_timeout_s)
            except StoreError as exc:
                log.warning("bucket ownership of replica set %s unknown: %s", rs.id, exc)
                return rs.id, None

        answers = await asyncio.gather(*(owned(rs) for rs in self.replicasets.values()))
        silent = {rs_id for rs_id, buckets in answers if buckets is None}
        if len(silent) == len(answers):
            raise StoreUnavailable(f"no replica set answered for its buckets ({len(answers)} tried)")
        owner = {bucket: rs_id for bucket, rs_id in self._bucket_owner.items() if rs_id in silent}
        for rs_id, buckets in answers:
            if buckets is None:
                continue
            for bucket in buckets["sending"]:
                owner.setdefault(bucket, rs_id)
        for rs_id, buckets in answers:
            for bucket in (buckets or {}).get("active", []):
                owner[bucket] = rs_id
        self._bucket_owner = owner
        return owner

    async def _learn_topology(self) -> None:
        """Add replica sets named in the storages' stored topology that this client does not know."""
        for rs in list(self.replicasets.values()):
            try:
                topology = await rs.call_any("topology_get", [], timeout=2.0)
            except StoreError:
                continue
            for entry in (topology or {}).get("replicasets", []):
                if entry["id"] not in self.replicasets:
                    spec = ReplicaSetSpec(
                        entry["id"],
                        tuple(
                            InstanceSpec(i["name"], i["host"], i["port"], entry["id"], position)
                            for position, i in enumerate(entry["instances"])
                        ),
                    )
                    self.replicasets[spec.id] = ReplicaSetClient(
                        spec,
                        self._user,
                        self._password,
                        request_timeout=self.settings.request_timeout_s,
                        read_from=self.settings.read_from,
                    )
            return

    def replicaset_of_bucket(self, bucket_id: int) -> ReplicaSetClient:
        rs_id = self._bucket_owner.get(bucket_id)
        if rs_id is None:
            raise NoOwner(f"no replica set owns bucket {bucket_id} (in a move, down, or not bootstrapped)")
        return self.replicasets[rs_id]

    def replicaset_id_of_bucket(self, bucket_id: int) -> int | None:
        """The replica set the bucket map says owns the bucket; None while none does (a move's last step)."""
        return self._bucket_owner.get(bucket_id)

    @property
    def bucket_map(self) -> dict[int, int]:
        return dict(self._bucket_owner)

    async def call_routed(
        self, subject: str, fn: str, args_after_bucket: list[Any], *, write: bool, timeout: float | None = None
    ) -> Any:
        """Call a per-subject procedure on the subject's replica set, following moved buckets. A bucket with no
        owner in the map (between a move's `sent` and its activation: a few milliseconds) is looked up again
        too, rather than failing a training run or a request at once."""
        bucket = self.bucket_id_for(subject)
        for attempt in range(ROUTING_ATTEMPTS):
            try:
                rs = self.replicaset_of_bucket(bucket)
                return await rs.call(fn, [bucket, *args_after_bucket], write=write, timeout=timeout)
            except (WrongBucket, NoOwner):
                if attempt == ROUTING_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
                await self.refresh_bucket_map()
        raise AssertionError("unreachable")

    # ---- writes ----------------------------------------------------------------------------------------
    def _row(self, feature: Feature, buckets: dict[str, int]) -> list[Any]:
        """The row `put_features` sends; ``buckets`` caches subject -> bucket over one batch (a client's
        transactions come together, and the CRC is the costliest part of a row)."""
        expires_at = feature.expires_at
        if expires_at is None:
            expires_at = self.ttl.expires_at(feature.source, feature.name, feature.time_use)
        bucket_id = buckets.get(feature.subject)
        if bucket_id is None:
            bucket_id = buckets[feature.subject] = self.bucket_id_for(feature.subject)
        return [
            bucket_id,
            feature.subject,
            feature.source,
            feature.name,
            feature.object,
            compact(feature.value),
            compact(float(feature.time_use)),
            compact(float(expires_at)),
        ]

    async def put_features(self, features: Iterable[Feature], fence: Fence | None = None) -> WriteResult:
        """Idempotent upsert of many features, batched and grouped per replica set, sent concurrently. A consumer
        passes its ``fence``: every call carries it, and raises ``Fenced`` when its replica set refuses it (calls
        to other replica sets may have been written: a retry is idempotent)."""
        buckets: dict[str, int] = {}
        pending = [(f, self._row(f, buckets)) for f in features]
        total = WriteResult()
        for attempt in range(ROUTING_ATTEMPTS):
            groups: dict[int, list[tuple[Feature, list[Any]]]] = defaultdict(list)
            unowned: list[tuple[Feature, list[Any]]] = []  # a bucket between `sent` and activation: next round
            for feature, row in pending:
                rs_id = self._bucket_owner.get(row[0])
                (unowned if rs_id is None else groups[rs_id]).append((feature, row))
            outcomes = await asyncio.gather(
                *(self._put_group(self.replicasets[rs_id], group, fence) for rs_id, group in groups.items()),
            )
            pending = unowned
            for result, misrouted in outcomes:
                total.add(result)
                pending.extend(misrouted)
            if not pending:
                return total
            await asyncio.sleep(0.05 * (attempt + 1))
            await self.refresh_bucket_map()
        if any(self._bucket_owner.get(row[0]) is None for _, row in pending):
            raise NoOwner(f"{len(pending)} features have no replica set to go to after {ROUTING_ATTEMPTS} attempts")
        raise WrongBucket(f"{len(pending)} features could not be routed after {ROUTING_ATTEMPTS} attempts")

    async def _put_group(
        self,
        rs: ReplicaSetClient,
        group: list[tuple[Feature, list[Any]]],
        fence: Fence | None = None,
    ) -> tuple[WriteResult, list[tuple[Feature, list[Any]]]]:
        """Write one replica set's share in chunks sent concurrently: while the storage's transaction
        thread applies one chunk, its network thread already decodes the next. Chunks are idempotent upserts
        of whole objects (``object_chunks``), so a chunk never holds part of a transaction."""
        chunks = object_chunks(group, self.settings.write_batch_rows)

        async def put_chunk(chunk: list[tuple[Feature, list[Any]]]) -> tuple[WriteResult, list[Any]]:
            result = WriteResult()
            while chunk:
                try:
                    rows = [row for _, row in chunk]
                    answer = await rs.call("put_features", [rows] if fence is None else [rows, fence.wire()])
                except WrongBucket:
                    return result, chunk
                except BadArgument as exc:  # one row is malformed: refuse it, write the others
                    index = exc.fields.get("index")
                    if not isinstance(index, int) or not 1 <= index <= len(chunk):
                        raise
                    result.refused.append((chunk[index - 1][0], f"BAD_ARGUMENT: {exc.message}"))
                    chunk = chunk[: index - 1] + chunk[index:]
                    continue
                result.written += answer["written"]
                result.unchanged += answer["unchanged"]
                result.tombstoned += answer["tombstoned"]
                result.superseded += answer.get("superseded", 0)
                for index, code in answer["refused"]:
                    result.refused.append((chunk[index - 1][0], code))
                break
            return result, []

        total = WriteResult()
        misrouted: list[tuple[Feature, list[Any]]] = []
        for result, wrong in await asyncio.gather(*(put_chunk(c) for c in chunks)):
            total.add(result)
            misrouted.extend(wrong)
        return total, misrouted

    async def replace_source(
        self,
        subject: str,
        source: str,
        version: float,
        features: Sequence[Feature],
    ) -> ReplaceResult:
        """Atomically make ``features`` the subject's whole ``source``, unless a newer version is stored."""
        buckets: dict[str, int] = {}
        rows = [self._row(f, buckets) for f in features]
        answer = await self.call_routed(subject, "replace_source", [subject, source, float(version), rows], write=True)
        return ReplaceResult(
            applied=answer["applied"],
            written=answer.get("written", 0),
            unchanged=answer.get("unchanged", 0),
            deleted=answer.get("deleted", 0),
            tombstoned=answer.get("tombstoned", 0),
            stored_version=answer.get("stored_version"),
        )

    async def delete_object(
        self, subject: str, object_id: str, tombstone_expires_at: float | None = None, source: str | None = None
    ) -> int:
        """Delete the subject's features extracted from ``object_id`` and leave a tombstone. With ``source``, only
        that source's features (and later rows of it) are affected: a transaction id may equal a client or an
        application id, whose features must survive the transaction's deletion."""
        expires = tombstone_expires_at
        if expires is None:
            ttl_s = self.settings.tombstone_ttl_s
            expires = time.time() + (ttl_s if ttl_s is not None else self.ttl.longest_days(source) * DAY)
        answer = await self.call_routed(subject, "delete_object", [subject, object_id, expires, source], write=True)
        return int(answer["deleted"])

    # ---- reads -----------------------------------------------------------------------------------------
    async def get_features(
        self,
        subject: str,
        *,
        from_time: float | None = None,
        to_time: float | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[StoredFeature]:
        opts: dict[str, Any] = {}
        if from_time is not None:
            opts["from"] = float(from_time)
        if to_time is not None:
            opts["to"] = float(to_time)
        if name is not None:
            opts["name"] = name
        if limit is not None:
            opts["limit"] = limit
        tuples = await self.call_routed(subject, "get_features", [subject, opts], write=False)
        return [StoredFeature.from_tuple(t) for t in tuples]

    async def aggregate(
        self,
        subject: str,
        specs: Sequence[AggregateSpec],
        now: float | None = None,
    ) -> list[Value | None]:
        """Values of ``specs`` for ``subject`` as of ``now`` (default: the current time), in spec order. A spec
        asked twice is computed once: the store folds every row into every spec it is sent."""
        at = float(now) if now is not None else time.time()
        position = {wire: i for i, wire in enumerate(dict.fromkeys(s.wire for s in specs))}
        values = await self.call_routed(subject, "aggregate", [subject, at, list(position)], write=False)
        return [values[position[s.wire]] for s in specs]

    async def aggregate_at(
        self,
        subject: str,
        specs: Sequence[AggregateSpec],
        times: Sequence[float],
    ) -> list[list[Value | None]]:
        """Values of ``specs`` for ``subject`` as of each of ``times`` (one list per time, in order), from one
        scan of the subject's rows per ``AGGREGATE_MAX_TIMES`` times: what training reads of a client at every
        cut."""
        wire = [s.wire for s in specs]
        out: list[list[Value | None]] = []
        for first in range(0, len(times), AGGREGATE_MAX_TIMES):
            at = [float(t) for t in times[first : first + AGGREGATE_MAX_TIMES]]
            answers = await self.call_routed(subject, "aggregate_at", [subject, at, wire], write=False)
            out.extend(list(values) for values in answers)
        return out


__all__ = ["FeatureStore", "ReplaceResult", "StoreError", "WriteResult"]
