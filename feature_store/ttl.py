"""Expiry policy: ``expires_at = time_use + ttl`` where the TTL comes from config (name, then source, then
default). Transaction features default to 500 days so 365-day windows stay whole at every training cut of
`rtrec train` (the earliest is 130 days back), not only at serving time."""

from __future__ import annotations

from dataclasses import dataclass, field

from feature_store.config import TtlSettings

DAY = 86400.0


@dataclass(frozen=True)
class TtlPolicy:
    default_days: float = 500.0
    source_days: dict[str, float] = field(default_factory=dict)
    name_days: dict[str, float] = field(default_factory=dict)

    def expires_at(self, source: str, name: str, time_use: float) -> float:
        days = self.name_days.get(name)
        if days is None:
            days = self.source_days.get(source, self.default_days)
        return time_use + days * DAY

    def shortest_days(self, name: str) -> float:
        """The TTL of ``name`` when its own rule says, else the shortest any source may give it (a name's
        source is the extractor's business; this bound is safe whichever it is)."""
        days = self.name_days.get(name)
        return days if days is not None else min([self.default_days, *self.source_days.values()])

    def longest_days(self, source: str | None) -> float:
        """The longest a row of ``source`` (of any source when None) may live: how long a deletion's tombstone
        must last so that no replay of the deleted object can bring it back while it could still be stored."""
        if source is not None:
            sources = [self.source_days.get(source, self.default_days)]
        else:
            sources = [self.default_days, *self.source_days.values()]
        return max([*sources, *self.name_days.values()])

    @classmethod
    def from_settings(cls, ttl: TtlSettings | None = None) -> TtlPolicy:
        """The configured policy; without settings, the configuration's defaults (never a bare 500 days for
        everything: a writer built without the policy would give the same feature another expiry)."""
        ttl = ttl if ttl is not None else TtlSettings()
        return cls(ttl.default_days, dict(ttl.sources), dict(ttl.names))
