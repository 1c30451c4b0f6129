"""Request and response bodies of the HTTP API (validated by FastAPI; errors become 422 with details)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from extractors.events import Timestamp
from feature_store.specs import FUNCTIONS, AggregateFn, SpecError, parse_window

Scalar = float | int | str | bool
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1


def _storable(value: Any) -> Any:
    """A feature value the store can hold: integers within 64 bits, finite numbers, text up to 4 KB."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not INT64_MIN <= value <= UINT64_MAX:
        raise ValueError("integers must fit in 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, str) and len(value) > 4096:
        raise ValueError("text values are limited to 4096 characters")
    return value


StorableScalar = Annotated[Scalar, AfterValidator(_storable)]


class SourceFeature(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    value: StorableScalar
    object: str | None = Field(default=None, max_length=128, description="defaults to the subject")
    time_use: Timestamp | None = Field(default=None, description="defaults to the version")


class ReplaceSourceBody(BaseModel):
    version: Timestamp | None = Field(default=None, description="event time of this client data; default now")
    features: list[SourceFeature] = Field(max_length=10_000)


class SpecBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feature: str = Field(min_length=1, max_length=128)
    fn: AggregateFn
    window: str | None = Field(default=None, examples=["30d"])

    @field_validator("window")
    @classmethod
    def _window_parses(cls, window: str | None) -> str | None:
        try:
            parse_window(window)
        except SpecError as exc:
            raise ValueError(str(exc)) from exc
        return window


# The most specs one inspection request may ask for (what it can hold a master for: `rtrec bench store`,
# ``aggregate.largest_inspection``).
MAX_SPECS_PER_REQUEST = 500


class AggregateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    now: Timestamp | None = None
    specs: list[SpecBody] = Field(min_length=1, max_length=MAX_SPECS_PER_REQUEST)


class AggregateResponse(BaseModel):
    values: list[Scalar | None]


class ViewResponse(BaseModel):
    subject: str
    view: str
    now: float
    values: dict[str, Scalar | None]


class WriteResponse(BaseModel):
    accepted_events: int
    written: int
    unchanged: int
    tombstoned: int
    # rows of a resent transaction's earlier version that the new version no longer has, deleted
    superseded: int = 0
    refused: list[dict[str, Any]]


class ReplaceResponse(BaseModel):
    applied: bool
    written: int
    unchanged: int
    deleted: int
    stored_version: float | None
    # history rows of this version the store refused (a subject at its row cap); the replace applies regardless
    history_refused: int = 0


class FeaturesResponse(BaseModel):
    subject: str
    features: list[dict[str, Any]]


__all__ = ["FUNCTIONS"]
