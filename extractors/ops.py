"""Store operations that extractors produce (pure data) and the one function that applies them.

Extractors never touch the store: they turn an event into a list of operations. The consumer, the HTTP
API and the replay module all apply operations through ``apply_ops``, so every path has the same
semantics (append / replace / delete) and the same idempotency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from feature_store.client import ReplaceResult, WriteResult
from feature_store.errors import StoreError
from feature_store.records import SUPERSEDING_SOURCES, Feature, Fence

log = logging.getLogger(__name__)


class FeatureWriter(Protocol):
    """What applying operations needs of a store (FeatureStore, or InMemoryFeatureStore in unit tests)."""

    async def put_features(self, features: Iterable[Feature], fence: Fence | None = None) -> WriteResult: ...

    async def replace_source(
        self, subject: str, source: str, version: float, features: Sequence[Feature]
    ) -> ReplaceResult: ...

    async def delete_object(
        self,
        subject: str,
        object_id: str,
        tombstone_expires_at: float | None = None,
        source: str | None = None,
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class AppendFeatures:
    """Transactions and events: add features (an idempotent upsert on the natural key)."""

    features: tuple[Feature, ...]
    origin: int = -1


@dataclass(frozen=True, slots=True)
class ReplaceSource:
    """Client data: the subject's features of ``source`` become exactly ``features`` (newest version wins)."""

    subject: str
    source: str
    version: float
    features: tuple[Feature, ...]
    origin: int = -1


@dataclass(frozen=True, slots=True)
class DeleteObject:
    """A deletion: remove the features of ``object_id`` from ``source`` (every source when None) and leave a
    tombstone of the same scope."""

    subject: str
    object_id: str
    origin: int = -1
    source: str | None = None


StoreOp = AppendFeatures | ReplaceSource | DeleteObject


@dataclass
class ApplyResult:
    written: int = 0
    unchanged: int = 0
    tombstoned: int = 0
    superseded: int = 0  # rows of a resent transaction's earlier version that its new one lacks, deleted
    deleted: int = 0
    replaced: int = 0
    replace_ignored: int = 0
    # origin -> reason for operations the store refused (fat or denied subject); they go to the DLQ.
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def features_changed(self) -> int:
        return self.written + self.deleted + self.superseded

    def add(self, other: ApplyResult) -> None:
        """Sum ``other`` into this one (the parts of a batch written by several lanes)."""
        self.written += other.written
        self.unchanged += other.unchanged
        self.tombstoned += other.tombstoned
        self.superseded += other.superseded
        self.deleted += other.deleted
        self.replaced += other.replaced
        self.replace_ignored += other.replace_ignored
        self.refused.update(other.refused)


async def apply_ops(store: FeatureWriter, ops: list[StoreOp], fence: Fence | None = None) -> ApplyResult:
    """Apply operations: appends in one batched write, then replaces, then deletes.

    Deletes go last so a deletion and its transaction in the same batch end deleted in either arrival
    order (the tombstone covers later batches). An operation the store refuses for its own content (a fat
    or denied subject, a rejected row: ``StoreError.refuses_input``) is reported in ``refused`` under its
    origin and the rest goes on; any other store failure is raised (nothing is lost: every operation is an
    idempotent upsert, so applying the whole list again after a failure is safe).

    ``fence`` (a consumer's) guards the appends, the one write whose late arrival could do harm: a
    transaction's first version written after its correction would replace it. Replaces are newest-wins and
    deletes leave tombstones, so in any order they end the same.
    """
    result = ApplyResult()
    appends = versions_together([op for op in ops if isinstance(op, AppendFeatures)])
    if appends:
        written = await store.put_features((f for op in appends for f in op.features), fence)
        result.written += written.written
        result.unchanged += written.unchanged
        result.tombstoned += written.tombstoned
        result.superseded += written.superseded
        if written.refused:  # rare: map features back to their messages only then
            origin_of = {id(f): op.origin for op in appends for f in op.features}
            for feature, code in written.refused:
                result.refused[origin_of[id(feature)]] = f"store refused the features: {code}"

    async def replace(op: ReplaceSource) -> None:
        try:
            answer = await store.replace_source(op.subject, op.source, op.version, op.features)
        except StoreError as exc:
            if not exc.refuses_input:
                raise
            result.refused[op.origin] = f"store refused the replace: {type(exc).__name__}: {exc}"
            return
        if answer.applied:
            result.replaced += 1
            result.written += answer.written
            result.unchanged += answer.unchanged
            result.deleted += answer.deleted
            result.tombstoned += answer.tombstoned
        else:
            result.replace_ignored += 1

    async def delete(op: DeleteObject) -> None:
        try:
            result.deleted += await store.delete_object(op.subject, op.object_id, source=op.source)
        except StoreError as exc:
            if not exc.refuses_input:
                raise
            result.refused[op.origin] = f"store refused the delete: {type(exc).__name__}: {exc}"

    await asyncio.gather(*(replace(op) for op in ops if isinstance(op, ReplaceSource)))
    await asyncio.gather(*(delete(op) for op in ops if isinstance(op, DeleteObject)))
    return result


ObjectKey = tuple[str, str, str]  # subject, source, object


def superseding_object(op: StoreOp) -> ObjectKey | None:
    """The object an append of a superseding source writes a version of (a transaction), else None."""
    if isinstance(op, AppendFeatures) and op.features and op.features[0].source in SUPERSEDING_SOURCES:
        first = op.features[0]
        return first.subject, first.source, first.object
    return None


def versions_together(appends: list[AppendFeatures]) -> list[AppendFeatures]:
    """The appends with every version of an object of a superseding source side by side, in order, where its
    first version stood (a transaction and its correction in one batch). The store applies side-by-side
    versions one after the other within one call, exactly as separate writes; apart, they could go in chunks
    written concurrently. One pass when no object comes twice (the consumer's hot path)."""
    versions: dict[ObjectKey, list[AppendFeatures]] = {}
    superseding = 0
    for op in appends:
        if (key := superseding_object(op)) is not None:
            versions.setdefault(key, []).append(op)
            superseding += 1
    if len(versions) == superseding:
        return appends
    together: list[AppendFeatures] = []
    for op in appends:
        if (key := superseding_object(op)) is None:
            together.append(op)
        else:
            together.extend(versions.pop(key, ()))
    return together


MAX_BACKOFF_S = 5.0


async def apply_ops_retrying(
    store: FeatureWriter,
    ops: list[StoreOp],
    *,
    give_up: Callable[[], bool] = lambda: False,
) -> ApplyResult:
    """``apply_ops``, retrying retriable store failures with exponential backoff until they pass or
    ``give_up()`` says stop. Operations are idempotent, so a partial first attempt is harmless."""
    backoff = 0.1
    while True:
        try:
            return await apply_ops(store, ops)
        except StoreError as exc:
            if not exc.retriable or give_up():
                raise
            log.warning("store write failed, trying again in %.1fs: %s: %s", backoff, type(exc).__name__, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
