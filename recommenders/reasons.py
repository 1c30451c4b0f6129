"""Feature names in words a banker can read: ``sum(tx.out.mcc.travel,365d)`` with a positive contribution
becomes "high travel spending over the last 365 days"."""

from __future__ import annotations

import functools
import re

from recommenders.profile import HOLDS

_SPEC = re.compile(r"^(\w+)\(([\w.]+)(?:,(\w+))?\)$")
_FN = {"sum": "total", "avg": "average", "min": "minimum", "max": "peak", "last": "latest"}
_WINDOW_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_DERIVED = {
    "age_years": "age",
    "tenure_years": "time with the bank",
    "segment_retail": "retail client",
    "segment_sme": "small-business client",
    "segment_corporate": "corporate client",
    "month_sin": "season",
    "month_cos": "season",
    "spend_to_income": "spending for the income",
    "balance_to_income": "savings for the income",
    "balance_trend": "balance growth",
    "spend_trend": "recent spending growth",
    "online_share": "share of online spending",
    "travel_share": "share of travel spending",
    "balance_swing": "balance swings for the income",
    "salary_recency": "salary still arriving",
    "inflow_spike": "recent one-off inflow for the income",
    "balance_floor": "balance floor over 30 days for the income",
    "salary_growth": "salary growth",
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


def describe(name: str, level: float) -> str:
    """One reason: a feature of the client and whether the client is high (level > 0) or low on it compared
    with other clients. Callers pass only features that pushed the score up."""
    return _describe(name, level > 0)


@functools.lru_cache(maxsize=4096)  # a view has tens of features: the words are built once per feature and side
def _describe(name: str, high: bool) -> str:
    if name in _DERIVED:
        words = _DERIVED[name]
        if name.startswith("segment"):
            return words if high else f"not a {words}"
        if name.startswith("month"):
            return "the time of year"
        return f"{'high' if high else 'low'} {words}"
    if name.startswith(HOLDS):
        product = name.removeprefix(HOLDS).replace("_", " ")
        return f"holds a {product}" if high else f"has no {product}"
    match = _SPEC.match(name)
    if match is None:
        return f"{'high' if high else 'low'} {name}"
    fn, feature, window = match.groups()
    if fn == "changes":  # a life event in the client data: "region changed over the last 90 days"
        fact = feature.rsplit(".", 1)[-1].replace("_", " ")
        text = f"{fact} {'changed' if high else 'unchanged'}"
    elif fn == "count":
        text = f"{'frequent' if high else 'little or no'} {_feature_words(feature)}"
    else:
        text = f"{'high' if high else 'low'} {_FN.get(fn, fn)} {_feature_words(feature)}"
    if window:
        unit = _WINDOW_UNITS.get(window[-1], "")
        text += f" over the last {window[:-1]} {unit}".rstrip()
    return text
