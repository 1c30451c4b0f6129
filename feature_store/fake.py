"""An in-memory stand-in for FeatureStore with the same write semantics (idempotent upsert on the natural
key, newest-wins replace, delete with tombstone) for pure unit tests, and as the reference state an
uninterrupted ingest must reach in integration tests."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence

from feature_store.client import ReplaceResult, WriteResult
from feature_store.errors import Fenced
from feature_store.records import OTHER_ANCHORS, SUPERSEDING_SOURCES, Feature, Fence, Value
from feature_store.specs import AggregateSpec


def value_order(value: Value) -> tuple[int, Value]:
    """The store's total order of values, which breaks `last` ties: booleans < numbers < strings."""
    if isinstance(value, bool):
        return (0, value)
    return (1, value) if isinstance(value, int | float) else (2, value)


NaturalKey = tuple[str, str, str, str]  # subject, source, object, name

_NUMERIC: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "min": min,
    "max": max,
    "avg": lambda xs: sum(xs) / len(xs),
}


class InMemoryFeatureStore:
    def __init__(self, deny_subjects: Iterable[str] = ()) -> None:
        self.features: dict[NaturalKey, Feature] = {}
        self.tombstones: dict[tuple[str, str], str | None] = {}  # (subject, object) -> source, None: every source
        self.versions: dict[tuple[str, str], float] = {}
        self.deny = set(deny_subjects)
        self.fences: dict[str, int] = {}

    def bucket_id_for(self, subject: str) -> int:
        """One bucket on one replica set: the routing a consumer's write lanes ask of a store."""
        return 1

    def replicaset_id_of_bucket(self, bucket_id: int) -> int | None:
        return 1

    async def put_features(self, features: Iterable[Feature], fence: Fence | None = None) -> WriteResult:
        if fence is not None:  # as lua/put.lua check_fence and raise_fence
            taken = dict(fence.takes_over)
            refused = {
                key: self.fences[key]
                for key in fence.keys
                if self.fences.get(key, -1) > fence.generation and taken.get(key) != self.fences[key]
            }
            if refused:
                raise Fenced(f"refused by the fences {refused}", refused=refused)
            self.fences.update(dict.fromkeys(fence.keys, fence.generation))
        return self._put(features, supersede=True)

    def _put(self, features: Iterable[Feature], *, supersede: bool) -> WriteResult:
        """As lua/put.lua: each run of a superseding source's object is its whole version (a replace, as
        lua/replace.lua, supersedes nothing: it replaces the whole source itself)."""
        result = WriteResult()
        run: list[Feature] = []
        existed = changed = refused = False
        anchors: tuple[str, ...] = ()

        def finish() -> None:
            if run and changed and not refused and (existed or self._stored_under(run[0], anchors)):
                result.superseded += self._drop_superseded(run)

        for f in features:
            if run and (
                (f.subject, f.source, f.object) != (run[0].subject, run[0].source, run[0].object)
                or (anchors and f.name in OTHER_ANCHORS)  # the next version of the same object
            ):
                finish()
                run, existed, changed, refused, anchors = [], False, False, False, ()
            key = (f.subject, f.source, f.object, f.name)
            outcome = self._upsert(key, f, result)
            if supersede and f.source in SUPERSEDING_SOURCES:
                run.append(f)
                existed = existed or outcome in ("unchanged", "changed")
                changed = changed or outcome in ("new", "changed")
                refused = refused or outcome == "refused"
                anchors = anchors or OTHER_ANCHORS.get(f.name, ())
        finish()
        return result

    def _stored_under(self, first: Feature, names: tuple[str, ...]) -> bool:
        return any((first.subject, first.source, first.object, name) in self.features for name in names)

    def _upsert(self, key: NaturalKey, f: Feature, result: WriteResult) -> str:
        """'unchanged', 'changed' (stored before), 'new', 'refused' or 'tombstoned'."""
        if key in self.features:
            old = self.features[key]
            if (old.value, old.time_use) == (f.value, f.time_use):
                result.unchanged += 1
                return "unchanged"
            self.features[key] = f
            result.written += 1
            return "changed"
        if f.subject in self.deny:
            result.refused.append((f, "SUBJECT_DENIED"))
            return "refused"
        if (f.subject, f.object) in self.tombstones and self.tombstones[(f.subject, f.object)] in (None, f.source):
            result.tombstoned += 1
            return "tombstoned"
        self.features[key] = f
        result.written += 1
        return "new"

    def _drop_superseded(self, run: list[Feature]) -> int:
        first, names = run[0], {f.name for f in run}
        stale = [k for k in self.features if k[:3] == (first.subject, first.source, first.object) and k[3] not in names]
        for key in stale:
            del self.features[key]
        return len(stale)

    async def replace_source(
        self, subject: str, source: str, version: float, features: Sequence[Feature]
    ) -> ReplaceResult:
        stored = self.versions.get((subject, source))
        if stored is not None and stored > version:
            return ReplaceResult(applied=False, stored_version=stored)
        keep = {(f.subject, f.source, f.object, f.name) for f in features}
        stale = [k for k in self.features if k[0] == subject and k[1] == source and k not in keep]
        for key in stale:
            del self.features[key]
        written = self._put(features, supersede=False)
        self.versions[(subject, source)] = version
        return ReplaceResult(
            applied=True,
            written=written.written,
            unchanged=written.unchanged,
            deleted=len(stale),
            tombstoned=written.tombstoned,
        )

    async def delete_object(
        self, subject: str, object_id: str, tombstone_expires_at: float | None = None, source: str | None = None
    ) -> int:
        doomed = [k for k in self.features if k[0] == subject and k[2] == object_id and source in (None, k[1])]
        for key in doomed:
            del self.features[key]
        scope = self.tombstones.get((subject, object_id), source)  # another source's tombstone widens to every one
        self.tombstones[(subject, object_id)] = source if scope == source else None
        return len(doomed)

    def snapshot(self, subject: str) -> set[tuple[str, str, str, Value, float]]:
        """(source, name, object, value, time_use) of a subject, for comparing with the real store."""
        return {
            (f.source, f.name, f.object, f.value, f.time_use) for f in self.features.values() if f.subject == subject
        }

    def subjects(self) -> set[str]:
        return {f.subject for f in self.features.values()}

    async def aggregate_at(
        self,
        subject: str,
        specs: Sequence[AggregateSpec],
        times: Sequence[float],
    ) -> list[list[Value | None]]:
        return [await self.aggregate(subject, specs, t) for t in times]

    async def aggregate(
        self,
        subject: str,
        specs: Sequence[AggregateSpec],
        now: float | None = None,
    ) -> list[Value | None]:
        at = now if now is not None else time.time()
        out: list[Value | None] = []
        for spec in specs:
            lo = at - spec.window_s if spec.window_s > 0 else -math.inf
            history = sorted(
                (
                    (f.time_use, f.value)
                    for f in self.features.values()
                    if f.subject == subject
                    and f.name == spec.feature
                    and f.time_use <= at
                    and (f.expires_at is None or f.expires_at > at)
                ),  # as the store: an expired row never counts
                key=lambda row: (row[0], value_order(row[1])),
            )
            rows = [row for row in history if row[0] > lo]
            numbers = [float(v) for _, v in rows if isinstance(v, int | float) and not isinstance(v, bool)]
            if spec.fn == "changes":  # against the version before, which may be older than the window
                changed = (
                    value_order(v) != value_order(was) for (_, was), (t, v) in itertools.pairwise(history) if t > lo
                )
                out.append(sum(changed))  # as the store: true is not 1
            elif spec.fn == "count":
                out.append(len(rows))
            elif spec.fn == "last":
                out.append(rows[-1][1] if rows else None)
            elif not numbers:
                out.append(None)
            else:
                out.append(_NUMERIC[spec.fn](numbers))
        return out
