"""The flat feature record as the client writes and reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

Value = float | int | str | bool

# Sources whose event is one object's whole description (lua/put.lua SUPERSEDING_SOURCES): a transaction sent
# again under its id with other fields supersedes the first version, whose rows under names the new one lacks
# are deleted. Such an object's rows must reach the store in one call, as one run. Transaction ids are unique
# per client: two legs of one transfer under one id would read as a corrected direction.
SUPERSEDING_SOURCES = frozenset({"transactions"})
# Anchor names with the other anchors of their source (lua/put.lua OTHER_ANCHORS): every version has exactly
# one (a transaction's amount, in or out), so a corrected direction, which shares no name with the first
# version, is known for a resend too. Anchors must live as long as the source's other names.
OTHER_ANCHORS: dict[str, tuple[str, ...]] = {"tx.in.amount": ("tx.out.amount",), "tx.out.amount": ("tx.in.amount",)}


@dataclass(frozen=True, slots=True)
class Fence:
    """What a consumer's write is fenced by (lua/put.lua ``check_fence``): the Kafka partitions its batch came
    from (``group/topic/partition`` keys) and the consumer group generation it holds them in. A replica set
    refuses the write (``Fenced``) once a newer generation wrote there for any of them. ``takes_over``: the
    fences (key, stored generation) the writer was refused by and may replace, having proved its generation is
    the group's current one; a fence that moved since refuses it still."""

    keys: tuple[str, ...]
    generation: int
    takes_over: tuple[tuple[str, int], ...] = ()

    def wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"keys": list(self.keys), "generation": self.generation}
        if self.takes_over:
            wire["takes_over"] = dict(self.takes_over)
        return wire


class Feature(NamedTuple):
    """One flat feature extracted from a raw event. ``expires_at`` is filled from the TTL policy when None.

    A named tuple rather than a frozen dataclass: consumers build about four per transaction, and a frozen
    dataclass costs several times as much to construct (its __init__ sets each field through object.__setattr__)."""

    subject: str
    source: str
    name: str
    object: str
    value: Value
    time_use: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class StoredFeature:
    """A feature as stored: its natural key (subject, source, name, object) is its identity everywhere, bucket
    moves included."""

    bucket_id: int
    subject: str
    source: str
    name: str
    object: str
    value: Value
    time_use: float
    expires_at: float

    @classmethod
    def from_tuple(cls, t: Any) -> StoredFeature:
        return cls(*t[:8])

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket_id": self.bucket_id,
            "subject": self.subject,
            "source": self.source,
            "name": self.name,
            "object": self.object,
            "value": self.value,
            "time_use": self.time_use,
            "expires_at": self.expires_at,
        }
