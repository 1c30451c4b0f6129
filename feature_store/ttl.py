"""Expiry policy: ``expires_at = time_use + ttl`` where the TTL comes from config (name, then source, then
default). Transaction features default to 400 days so 365-day windows stay whole."""

from __future__ import annotations

from dataclasses import dataclass, field

DAY = 86400.0


@dataclass(frozen=True)
class TtlPolicy:
    default_days: float = 400.0
    source_days: dict[str, float] = field(default_factory=dict)
    name_days: dict[str, float] = field(default_factory=dict)

    def expires_at(self, source: str, name: str, time_use: float) -> float:
        days = self.name_days.get(name)
        if days is None:
            days = self.source_days.get(source, self.default_days)
        return time_use + days * DAY
