"""Kafka message bytes -> a validated event, or a typed error that says why (the DLQ reason).

Payloads are JSON unless the ``content-type`` header is ``application/msgpack``. The topic decides the event
type; an optional ``type`` field must agree with it, and an unknown topic or type is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import orjson
from pydantic import BaseModel, ValidationError

from deploy.settings import TOPICS
from extractors.events import (
    ApplicationEvent,
    BankEvent,
    ClientEvent,
    ProductEvent,
    TransactionDeleteEvent,
    TransactionEvent,
)

MSGPACK = "application/msgpack"


class ExtractionError(Exception):
    """A message that cannot become an event. ``kind`` is a stable short tag for metrics and the DLQ."""

    kind = "error"


class MalformedMessage(ExtractionError):
    kind = "malformed"


class InvalidEvent(ExtractionError):
    kind = "invalid"


class UnknownEventType(ExtractionError):
    kind = "unknown_type"


# topic -> (model, accepted values of an optional "type" field)
EVENT_TYPES: dict[str, tuple[type[BaseModel], frozenset[str]]] = {
    TOPICS["transactions"]: (TransactionEvent, frozenset({"transaction"})),
    TOPICS["transaction_deletes"]: (TransactionDeleteEvent, frozenset({"transaction_delete", "transaction-delete"})),
    TOPICS["clients"]: (ClientEvent, frozenset({"client"})),
    TOPICS["applications"]: (ApplicationEvent, frozenset({"application"})),
    TOPICS["products"]: (ProductEvent, frozenset({"product"})),
}

INPUT_TOPICS: tuple[str, ...] = tuple(EVENT_TYPES)


def _content_type(headers: Sequence[tuple[str, bytes]] | None) -> str:
    for key, value in headers or ():
        if key.lower() == "content-type" and value:
            return value.decode("latin-1").strip().lower()
    return "application/json"


def decode_payload(payload: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None) -> dict[str, Any]:
    if payload is None:
        raise MalformedMessage("empty message (null value)")
    content_type = _content_type(headers)
    try:
        if content_type == MSGPACK:
            decoded = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        else:
            decoded = orjson.loads(payload)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MalformedMessage(f"cannot decode {content_type} payload: {exc}") from exc
    if not isinstance(decoded, dict):
        raise MalformedMessage(f"payload must be an object, got {type(decoded).__name__}")
    return decoded


def validate_event(topic: str, fields: dict[str, Any]) -> BankEvent:
    known = EVENT_TYPES.get(topic)
    if known is None:
        raise UnknownEventType(f"no event type is read from topic {topic!r}")
    model, accepted_types = known
    declared = fields.get("type")
    if declared is not None and declared not in accepted_types:
        raise UnknownEventType(f"unknown event type {declared!r} on topic {topic!r}")
    try:
        return model.model_validate(fields)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidEvent(f"{model.__name__} schema violation: {problems}") from exc


def decode_event(topic: str, payload: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None) -> BankEvent:
    return validate_event(topic, decode_payload(payload, headers))
