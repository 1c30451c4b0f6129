"""Feature endpoints: write transactions, replace a source, delete an object, raw reads, aggregates.
Routers only parse, call the store, and shape the answer."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status

from extractors.decode import FutureTimestamp, check_not_ahead, shorten
from extractors.events import SEGMENTS, Timestamp, TransactionEvent, client_fact
from extractors.extract import (
    SOURCE_HISTORY,
    SOURCE_PROFILE,
    ExtractionConfig,
    client_history,
    extract,
    source_of_name,
)
from extractors.ops import apply_ops
from feature_store.client import FeatureStore
from feature_store.records import Feature, Value
from feature_store.specs import AggregateSpec, parse_view, parse_window
from manager.auth import Reader, Writer
from manager.metrics import FEATURES_WRITTEN, STORE_LATENCY
from manager.schemas import (
    AggregateBody,
    AggregateResponse,
    FeaturesResponse,
    ReplaceResponse,
    ReplaceSourceBody,
    ViewResponse,
    WriteResponse,
)

router = APIRouter(prefix="/v1")

Subject = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
SourceName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
ObjectName = Annotated[str, Path(min_length=1, max_length=128)]


def _refuse_future(config: ExtractionConfig, times: Iterable[tuple[str, float | None]]) -> None:
    """422 for a time ahead of the clock, as the consumer dead-letters it: stored, it would hide itself from reads
    (and a client-data version would win against every real update) until then."""
    now = time.time()
    try:
        for what, ts in times:
            if ts is not None:
                check_not_ahead(ts, now, config.max_ahead_s, what)
    except FutureTimestamp as exc:
        raise HTTPException(422, str(exc)) from exc


def _store(request: Request) -> FeatureStore:
    return request.app.state.store  # type: ignore[no-any-return]


@router.post("/features/transactions", response_model=WriteResponse)
async def write_transactions(
    request: Request,
    _: Writer,
    events: Annotated[list[TransactionEvent], Body(max_length=10_000)],
) -> WriteResponse:
    """Write a batch of transaction events through the same extractors the Kafka consumers use."""
    config = request.app.state.settings.consumer.extraction()
    _refuse_future(config, ((f"events[{i}].ts", event.ts) for i, event in enumerate(events)))
    ops = [op for i, event in enumerate(events) for op in extract(event, config, origin=i)]
    with STORE_LATENCY.labels("put_features").time():
        result = await apply_ops(_store(request), ops)
    FEATURES_WRITTEN.inc(result.written)
    refused = [{"index": i, "tx_id": events[i].tx_id, "reason": reason} for i, reason in result.refused.items()]
    return WriteResponse(
        accepted_events=len(events),
        written=result.written,
        unchanged=result.unchanged,
        tombstoned=result.tombstoned,
        superseded=result.superseded,
        refused=refused,
    )


# The most rows one raw read answers: a worker encodes the answer on its event loop, where every recommendation
# it holds waits, and 100,000 rows (a subject at its cap) held it for a long while (a reviewer's find, 2026-12-07).
MAX_RAW_ROWS = 10_000


@router.put("/subjects/{subject}/sources/{source}", response_model=ReplaceResponse)
async def replace_source(
    request: Request,
    _: Writer,
    subject: Subject,
    source: SourceName,
    body: ReplaceSourceBody,
) -> ReplaceResponse:
    """Replace all features of ``source`` for ``subject`` atomically; an older version than stored is ignored.
    Client data (``client_profile``, ``registry``) is also kept as history at the version's time, as the
    consumer keeps it (an older version too: it is a true past state). A ``client_profile`` replace carries the
    whole profile, segment included, as a client event does: the segment says which version is visible."""
    if source == SOURCE_HISTORY:
        raise HTTPException(422, f"{SOURCE_HISTORY} is kept by the store from client-data replaces; it is append-only")
    values = _checked_values(source, body)
    if source == SOURCE_PROFILE and not any(
        f.name == "profile.segment" and value is not None for f, value in zip(body.features, values, strict=True)
    ):
        raise HTTPException(422, f"a {SOURCE_PROFILE} replace needs profile.segment, one of {', '.join(SEGMENTS)}")
    version = body.version if body.version is not None else time.time()
    times = [("version", version), *((f"features[{i}].time_use", f.time_use) for i, f in enumerate(body.features))]
    _refuse_future(request.app.state.settings.consumer.extraction(), times)
    features = tuple(
        Feature(subject, source, f.name, f.object or subject, value, f.time_use if f.time_use is not None else version)
        for f, value in zip(body.features, values, strict=True)
        if value is not None  # blank text, as a client event's: the fact is absent
    )
    history = client_history(subject, version, features)
    refused = 0
    if history:  # first, as the consumer applies it
        with STORE_LATENCY.labels("put_features").time():
            refused = len((await _store(request).put_features(history)).refused)  # a subject at its row cap
    with STORE_LATENCY.labels("replace_source").time():
        answer = await _store(request).replace_source(subject, source, version, features)
    return ReplaceResponse(
        applied=answer.applied,
        written=answer.written,
        unchanged=answer.unchanged,
        deleted=answer.deleted,
        stored_version=answer.stored_version,
        history_refused=refused,
    )


def _checked_values(source: str, body: ReplaceSourceBody) -> list[Value | None]:
    """Each feature's value, a client fact's as a client event carries it (``client_fact``); a value a client
    event would be refused for is refused here too, with its place and reason, and so is a name another
    source's extractor writes (``source_of_name``)."""
    values: list[Value | None] = []
    for i, f in enumerate(body.features):
        owner = source_of_name(f.name)
        if owner is not None and owner != source:
            raise HTTPException(422, f"features[{i}] ({f.name}): a name of source {owner}, not of {source}")
        try:
            values.append(client_fact(f.name, f.value))
        except ValueError as exc:
            raise HTTPException(422, f"features[{i}] ({f.name}): {exc}") from None
    return values


@router.delete("/subjects/{subject}/objects/{object_id}")
async def delete_object(
    request: Request,
    _: Writer,
    subject: Subject,
    object_id: ObjectName,
    source: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+$")] = None,
) -> dict[str, int]:
    """Delete the features extracted from one object (e.g. a reversed transaction: ``source=transactions``) and
    block its redelivery for as long as a row of that source may live (500 days for transactions). Without
    ``source``, every source's rows of that id go and the block lasts as long as the longest-lived source's
    rows (products and client data: a century)."""
    with STORE_LATENCY.labels("delete_object").time():
        deleted = await _store(request).delete_object(subject, object_id, source=source)
    return {"deleted": deleted}


@router.get("/subjects/{subject}/features", response_model=FeaturesResponse)
async def get_features(
    request: Request,
    _: Reader,
    subject: Subject,
    from_: Annotated[Timestamp | None, Query(alias="from")] = None,
    to: Annotated[Timestamp | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RAW_ROWS)] = MAX_RAW_ROWS,
) -> FeaturesResponse:
    """Raw features of a subject, oldest first; ``from`` and ``to`` bound time_use (inclusive). At most
    ``MAX_RAW_ROWS`` rows an answer: a subject of more is read page by page, ``from`` the last time read."""
    if from_ is not None and to is not None and to < from_:
        raise HTTPException(422, "'to' is before 'from'")
    with STORE_LATENCY.labels("get_features").time():
        rows = await _store(request).get_features(subject, from_time=from_, to_time=to, name=name, limit=limit)
    return FeaturesResponse(subject=subject, features=[r.as_dict() for r in rows])


@router.get("/subjects/{subject}/aggregates", response_model=ViewResponse)
async def view_aggregates(
    request: Request,
    _: Reader,
    subject: Subject,
    view: Annotated[str, Query(min_length=1)],
    now: Annotated[Timestamp | None, Query()] = None,
) -> ViewResponse:
    """A named feature view (config ``[views]``) computed for the subject as of ``now``."""
    views: dict[str, list[AggregateSpec]] = request.app.state.views
    specs = views.get(view)
    if specs is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown view {shorten(view, 64)}; known: {sorted(views)}")
    at = now if now is not None else time.time()
    with STORE_LATENCY.labels("aggregate").time():
        values = await _store(request).aggregate(subject, specs, at)
    return ViewResponse(
        subject=subject, view=view, now=at, values={s.label: v for s, v in zip(specs, values, strict=True)}
    )


@router.post("/subjects/{subject}/aggregate", response_model=AggregateResponse)
async def aggregate(request: Request, _: Reader, subject: Subject, body: AggregateBody) -> AggregateResponse:
    """Ad-hoc aggregates: values in spec order; a window covers now - window < time_use <= now."""
    specs = [AggregateSpec(fn=s.fn, feature=s.feature, window_s=parse_window(s.window)) for s in body.specs]
    with STORE_LATENCY.labels("aggregate").time():
        values = await _store(request).aggregate(subject, specs, body.now)
    return AggregateResponse(values=values)


def compile_views(views: dict[str, list[str]]) -> dict[str, list[AggregateSpec]]:
    return {name: parse_view(specs) for name, specs in views.items()}
