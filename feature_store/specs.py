"""Aggregate specs and feature views, shared by training and serving.

A spec reads ``fn(feature, window)`` such as ``sum(tx.out.amount, 30d)`` or ``last(profile.segment)``; the
window covers ``now - window < time_use <= now`` and no window means the whole stored history.
``changes(history.profile.region, 90d)`` counts the versions in the window whose value differs from the version before
them (which may be older than the window): a feature kept as a history of versions, such as the client data
history, says when a fact changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

AggregateFn = Literal["sum", "count", "min", "max", "avg", "last", "changes"]
FUNCTIONS: tuple[str, ...] = get_args(AggregateFn)

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SPEC = re.compile(r"^\s*(\w+)\s*\(\s*([\w.:-]+)\s*(?:,\s*([\w.]+)\s*)?\)\s*$")


class SpecError(ValueError):
    """A spec or window string that cannot be parsed."""


def parse_window(window: str | None) -> float:
    """``"30d"`` -> 2592000.0 seconds; None or ``""`` -> 0 (the whole history)."""
    if window is None or window == "":
        return 0.0
    match = _WINDOW.match(window)
    if match is None:
        raise SpecError(f"bad window {window!r}: use a number and a unit s, m, h, d or w, e.g. '30d'")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise SpecError(f"bad window {window!r}: must be positive")
    return seconds


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    fn: AggregateFn
    feature: str
    window_s: float = 0.0
    # Stable column name, e.g. ``sum(tx.out.amount,30d)``; the model's feature name. Computed once: the
    # manager reads the labels of ~70 specs on every request.
    label: str = field(init=False, compare=False, repr=False)
    wire: tuple[str, str, float] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.fn not in FUNCTIONS:
            raise SpecError(f"unknown aggregate function {self.fn!r}; use one of {', '.join(FUNCTIONS)}")
        if not self.feature:
            raise SpecError("a spec needs a feature name")
        if self.window_s < 0:
            raise SpecError("window must not be negative")
        window = f",{_format_window(self.window_s)}" if self.window_s else ""
        object.__setattr__(self, "label", f"{self.fn}({self.feature}{window})")
        object.__setattr__(self, "wire", (self.fn, self.feature, float(self.window_s)))


def _format_window(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0 and unit != "w":
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_spec(text: str) -> AggregateSpec:
    match = _SPEC.match(text)
    if match is None:
        raise SpecError(f"bad spec {text!r}: expected fn(feature[, window]) such as 'sum(tx.out.amount, 30d)'")
    fn, feature, window = match.groups()
    return AggregateSpec(fn=fn, feature=feature, window_s=parse_window(window))  # type: ignore[arg-type]


def parse_view(specs: list[str]) -> list[AggregateSpec]:
    return [parse_spec(text) for text in specs]
