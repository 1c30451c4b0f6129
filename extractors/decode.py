"""Kafka message bytes -> a validated event, or a typed error that says why (the DLQ reason).

Payloads are JSON unless the ``content-type`` header says msgpack. The topic decides the event type; an
optional ``type`` field must agree with it, and an unknown topic or type is rejected.

Every input is hostile until validated: anything a producer can put in a message (any bytes, any nesting,
any numbers, any header) ends here as an event or as an ``ExtractionError``, never as another exception,
so one message can never stop a consumer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import orjson
from pydantic import BaseModel, ValidationError

from extractors.config import TOPICS
from extractors.events import (
    ApplicationEvent,
    BankEvent,
    ClientEvent,
    ProductEvent,
    TransactionDeleteEvent,
    TransactionEvent,
)

MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})
JSON_TYPES = frozenset({"application/json", "text/json"})
# A bank event is well under a kilobyte; anything this large is a producer bug or an attack, rejected before
# parsing so it costs no decode time.
MAX_EVENT_BYTES = 256 * 1024
# msgpack nesting and sizes allowed inside one event (orjson has its own depth limit of 1024).
MSGPACK_LIMITS: dict[str, int] = {
    "max_str_len": MAX_EVENT_BYTES,
    "max_bin_len": MAX_EVENT_BYTES,
    "max_array_len": 10_000,
    "max_map_len": 10_000,
    "max_ext_len": 0,
}


class ExtractionError(Exception):
    """A message that cannot become an event. ``kind`` is a stable short tag for metrics and the DLQ."""

    kind = "error"


class MalformedMessage(ExtractionError):
    kind = "malformed"


class UnsupportedContentType(ExtractionError):
    kind = "unsupported_content_type"


class InvalidEvent(ExtractionError):
    kind = "invalid"


class FutureTimestamp(ExtractionError):
    """An event time ahead of the clock: stored, it would hide itself from every read until then (an application
    not seen is a product offered again) and, for client data, win "newest wins" against every real update."""

    kind = "future_timestamp"


def check_not_ahead(ts: float, now: float, max_ahead_s: float, what: str = "ts") -> None:
    """Refuse a time more than ``max_ahead_s`` after ``now`` (FutureTimestamp, with what to look at)."""
    ahead = ts - now
    if ahead > max_ahead_s:
        raise FutureTimestamp(
            f"{what} is {ahead:.0f} s ahead of its arrival (at most {max_ahead_s:.0f} s): a producer clock running "
            "fast, or a local time sent without its zone (read as UTC)"
        )


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


def shorten(value: object, limit: int = 80) -> str:
    """``repr`` of a hostile value, cut so a reason never carries a megabyte of someone else's payload."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def content_type(headers: Sequence[tuple[str, bytes | None]] | None) -> str:
    """The media type of the ``content-type`` header (parameters such as charset dropped), JSON if absent."""
    for key, value in headers or ():
        if isinstance(key, str) and key.lower() == "content-type" and value:
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return "application/json"


def decode_payload(payload: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None = None) -> dict[str, Any]:
    if payload is None:
        raise MalformedMessage("empty message (null value)")
    if len(payload) > MAX_EVENT_BYTES:
        raise MalformedMessage(f"message of {len(payload)} bytes exceeds the {MAX_EVENT_BYTES}-byte event limit")
    media_type = content_type(headers)
    try:
        if media_type in MSGPACK_TYPES:
            decoded = msgpack.unpackb(payload, raw=False, strict_map_key=True, **MSGPACK_LIMITS)
        elif media_type in JSON_TYPES:
            decoded = orjson.loads(payload)
        else:
            raise UnsupportedContentType(
                f"content-type {shorten(media_type)} is not supported (use application/json or application/msgpack)"
            )
    except ExtractionError:
        raise
    except Exception as exc:  # msgpack raises ValueError, TypeError (unhashable keys), its own errors...
        problem = f"{type(exc).__name__}: {shorten(str(exc))}"
        raise MalformedMessage(f"cannot decode {media_type} payload: {problem}") from exc
    if not isinstance(decoded, dict):
        raise MalformedMessage(f"payload must be an object, got {type(decoded).__name__}")
    odd_keys = [key for key in decoded if not isinstance(key, str)]
    if odd_keys:
        raise MalformedMessage(f"object keys must be strings, got {shorten(odd_keys[0])}")
    return decoded


def validate_event(topic: str, fields: dict[str, Any]) -> BankEvent:
    known = EVENT_TYPES.get(topic)
    if known is None:
        raise UnknownEventType(f"no event type is read from topic {shorten(topic)}")
    model, accepted_types = known
    declared = fields.get("type")
    if declared is not None and (not isinstance(declared, str) or declared not in accepted_types):
        raise UnknownEventType(f"unknown event type {shorten(declared)} on topic {topic!r}")
    try:
        return model.model_validate(fields)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {shorten(e['msg'], 200)}" for e in exc.errors()[:5]
        )
        raise InvalidEvent(f"{model.__name__} schema violation: {problems}") from exc
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:  # a validator's own failure
        raise InvalidEvent(f"{model.__name__} cannot be validated: {type(exc).__name__}: {shorten(str(exc))}") from exc


def decode_event(
    topic: str, payload: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None = None
) -> BankEvent:
    return validate_event(topic, decode_payload(payload, headers))
