"""Raw bank events as producers publish them (DESIGN.md "Events"). Extra fields are allowed and ignored;
timestamps may be ISO 8601 strings or epoch seconds and are normalised to epoch seconds (float)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from feature_store.records import Value

ClientId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
ObjectId = Annotated[str, Field(min_length=1, max_length=128)]
ProductId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]

# 2000-01-01 .. 2100-01-01: anything outside is a producer bug, not a bank event.
MIN_TS = 946684800.0
MAX_TS = 4102444800.0
# Birth dates and registration dates may be older than the event range.
MIN_DATE_TS = -2208988800.0  # 1900-01-01


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}..."


def _to_epoch(value: Any, *, low: float = MIN_TS) -> float:
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO 8601 or epoch seconds, not a boolean")
    if isinstance(value, int | float):
        if isinstance(value, int) and not -(2**53) <= value <= 2**53:
            raise ValueError(f"timestamp {value} is out of the accepted range")
        ts = float(value)
    elif isinstance(value, datetime):
        ts = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, date):
        ts = datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    elif isinstance(value, str):
        text = value.strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"timestamp {_short(value)} is neither ISO 8601 nor epoch seconds") from exc
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                ts = parsed.timestamp()
            except (OverflowError, OSError) as exc:  # year 1 minus a timezone offset, and the like
                raise ValueError(f"timestamp {_short(value)} is out of the accepted range") from exc
    else:
        raise ValueError("timestamp must be ISO 8601 or epoch seconds")
    if not low <= ts <= MAX_TS:  # also false for NaN
        raise ValueError(f"timestamp {_short(value)} is out of the accepted range")
    return ts


_DECIMAL = re.compile(r"^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$")


def _number(value: Any) -> Any:
    """A number as JSON or msgpack carries it, or a plain decimal string; never a boolean (``true`` is not an
    amount) nor ``1_000``-style text."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, str) and not _DECIMAL.match(value):
        raise ValueError("must be a number")
    return value


def _blank_is_missing(value: Any) -> Any:
    """An optional text field sent empty or blank is absent, not an empty feature value."""
    return None if isinstance(value, str) and not value.strip() else value


Number = Annotated[float, BeforeValidator(_number)]
WholeNumber = Annotated[int, BeforeValidator(_number)]
OptionalText = BeforeValidator(_blank_is_missing)

Timestamp = Annotated[float, BeforeValidator(_to_epoch)]


def _date(value: Any) -> float:
    """A birth or registration date. A whole number from 1 to 9999 sent as a number (``2010``, ``"90"``) is a
    year, not epoch seconds: read as seconds it made a child born in 2010 look 56. (An ISO date is never
    ambiguous, nor a time with fractions of a second, such as a simulated client's born in 1969.)"""
    ts = _to_epoch(value, low=MIN_DATE_TS)
    numeric = not isinstance(value, str) or _DECIMAL.match(value) is not None
    if numeric and ts == int(ts) and 0 < abs(ts) < 10_000:
        raise ValueError(f"date {_short(value)} reads as a year, not epoch seconds: send ISO 8601")
    return ts


DateTimestamp = Annotated[float, BeforeValidator(_date)]
# A Kafka arrival time (a replay window's bound): from 1970 on, so `--from 1970-01-01` replays all that is kept.
MIN_ARRIVAL_TS = 0.0
ArrivalTimestamp = Annotated[float, BeforeValidator(lambda v: _to_epoch(v, low=MIN_ARRIVAL_TS))]


Segment = Literal["retail", "sme", "corporate"]
SEGMENTS: tuple[str, ...] = get_args(Segment)


class _Event(BaseModel):
    # NaN and infinities are never bank amounts or times (msgpack can carry them, JSON cannot).
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


class TransactionEvent(_Event):
    tx_id: ObjectId
    client_id: ClientId
    ts: Timestamp
    amount: Number = Field(gt=0, lt=1e12)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    direction: Literal["in", "out"]
    mcc: WholeNumber | None = Field(default=None, ge=0, le=9999)
    channel: Annotated[str | None, OptionalText] = Field(default=None, max_length=32, pattern=r"^[a-z0-9_]+$")
    counterparty: Annotated[str | None, OptionalText] = Field(default=None, max_length=128)
    # Optional account balance after the transaction (core banking sends it; Berka has it).
    balance: Number | None = Field(default=None, gt=-1e15, lt=1e15)


class TransactionDeleteEvent(_Event):
    tx_id: ObjectId
    client_id: ClientId
    ts: Timestamp


class ClientEvent(_Event):
    client_id: ClientId
    ts: Timestamp
    segment: Segment
    birth_date: DateTimestamp | None = None
    region: Annotated[str | None, OptionalText] = Field(default=None, max_length=64)
    registered_at: DateTimestamp | None = None
    industry_code: Annotated[str | None, OptionalText] = Field(default=None, max_length=16)
    director_birth_date: DateTimestamp | None = None


# A client-data feature's name -> the client event field it holds (``extract_client`` writes them): a replace
# through the API checks a fact as the consumer's decoding checks the field.
CLIENT_FACT_FIELDS: dict[str, str] = {
    "profile.segment": "segment",
    "profile.birth_date": "birth_date",
    "profile.region": "region",
    "profile.registered_at": "registered_at",
    "registry.industry_code": "industry_code",
    "registry.director_birth_date": "director_birth_date",
}
_CLIENT_FACTS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(
        Annotated[ClientEvent.model_fields[field].annotation, ClientEvent.model_fields[field]],  # type: ignore[arg-type]
        config=_Event.model_config,
    )
    for name, field in CLIENT_FACT_FIELDS.items()
}


def client_fact(name: str, value: Value) -> Value | None:
    """A client fact's value as a client event carries it (a date in epoch seconds, blank text as None); other
    names pass unchanged. Raises ``ValueError`` with the reason a client event with that value is refused for:
    a birth date of ``true`` had been stored and read as 1970."""
    adapter = _CLIENT_FACTS.get(name)
    if adapter is None:
        return value
    try:
        checked: Value | None = adapter.validate_python(value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None
    return checked


class ApplicationEvent(_Event):
    application_id: ObjectId
    client_id: ClientId
    product: ProductId
    status: Literal["submitted", "approved", "rejected"]
    ts: Timestamp


class ProductEvent(_Event):
    client_id: ClientId
    product: ProductId
    action: Literal["opened", "closed"]
    ts: Timestamp
    # Optional (since 2026-12-06): the account, card or contract the event is about. With it, a resend under
    # another time is the same opening, and which of two accounts closed is known (recommenders/profile.py holds).
    account_id: Annotated[str | None, OptionalText] = Field(default=None, max_length=128)


BankEvent = TransactionEvent | TransactionDeleteEvent | ClientEvent | ApplicationEvent | ProductEvent
