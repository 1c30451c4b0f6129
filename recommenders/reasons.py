"""Feature names in words a banker can read: ``sum(tx.out.mcc.travel,365d)`` with a positive contribution
becomes "high travel spending over the last 365 days"."""

from __future__ import annotations

import re

_SPEC = re.compile(r"^(\w+)\(([\w.]+)(?:,(\w+))?\)$")
_FN = {"sum": "total", "avg": "average", "min": "minimum", "max": "largest", "last": "latest"}
_WINDOW_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_DERIVED = {
    "age_years": "age",
    "tenure_years": "time with the bank",
    "segment_retail": "retail client",
    "segment_sme": "small-business client",
    "segment_corporate": "corporate client",
    "month_sin": "season",
    "month_cos": "season",
}


def _feature_words(feature: str) -> str:
    parts = feature.split(".")
    if feature == "balance":
        return "account balance"
    if parts[0] == "tx" and len(parts) >= 3:
        flow = "spending" if parts[1] == "out" else "incoming payments"
        if parts[2] == "amount":
            return flow
        if parts[2] == "salary":
            return "salary payments"
        if parts[2] == "mcc" and len(parts) > 3:
            return f"{parts[3]} {flow}"
        if parts[2] == "channel" and len(parts) > 3:
            return f"{parts[3]} {flow}"
        if parts[2] == "cp" and len(parts) > 3:
            return f"{flow} with {parts[3]}s"
        if parts[2] == "fx":
            return f"foreign-currency {flow}"
    return feature.replace(".", " ")


def describe(name: str, contribution: float) -> str:
    """One reason: which feature and in which direction it pushed the score."""
    level = "high" if contribution > 0 else "low"
    if name in _DERIVED:
        words = _DERIVED[name]
        return words if name.startswith("segment") or name.startswith("month") else f"{level} {words}"
    match = _SPEC.match(name)
    if match is None:
        return f"{level} {name}"
    fn, feature, window = match.groups()
    if fn == "count":
        text = f"{'frequent' if contribution > 0 else 'rare'} {_feature_words(feature)}"
    else:
        text = f"{level} {_FN.get(fn, fn)} {_feature_words(feature)}"
    if window:
        unit = _WINDOW_UNITS.get(window[-1], "")
        text += f" over the last {window[:-1]} {unit}".rstrip()
    return text
