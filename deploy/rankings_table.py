"""The holdout rankings as a table for people (`rtrec evaluate` without --json, the demo): every ranking's
MAP@k with its 95 % interval, the served blend's paired gain over it, and whether the two intervals overlap
(the stricter test, which a model must pass on the simulated banks), best first."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from recommenders.evaluation import format_interval

NAMES = {
    "blend": "blend (served)",
    "blend_with_value": "blend x business value (shown order)",
    "xgboost": "XGBoost alone",
    "popularity": "popularity",
    "segment_popularity": "popularity per segment",
    "expert": "expert portraits alone",
    "logistic_regression": "logistic regression",
    "simulator_chances": "the simulator's own chances",
}


def rankings_table(metrics: dict[str, Any], k: int = 3) -> Table:
    rows = metrics.get("evaluated_clients", 0)
    clients = metrics.get("evaluated_distinct_clients", rows)
    seen = f"{clients} clients" + (f" at {rows} client-cuts" if rows != clients else "")
    table = Table(title=f"holdout MAP@{k}: {seen} with an uptake (95 % intervals, resampled by client)")
    table.add_column("ranking")
    table.add_column(f"MAP@{k}", justify="right")
    table.add_column("blend minus it (paired)", justify="right")
    table.add_column("intervals")
    rankings = metrics.get("rankings", {})
    served = rankings.get("blend", {}).get(f"map_at_{k}")
    for name, values in sorted(rankings.items(), key=lambda item: -item[1][f"map_at_{k}"][0]):
        gain = metrics.get("blend_minus", {}).get(name)
        style = "bold green" if name == "blend" else None
        table.add_row(
            NAMES.get(name, name),
            format_interval(values[f"map_at_{k}"], missing=""),
            format_interval(gain, signed=True, missing=""),
            "" if name == "blend" else intervals_apart(served, values[f"map_at_{k}"]),
            style=style,
        )
    return table


def intervals_overlap(a: list[float], b: list[float]) -> bool:
    """Whether two intervals ``[mean, low, high]`` share any value."""
    return not (a[1] > b[2] or a[2] < b[1])


def intervals_apart(served: list[float] | None, other: list[float]) -> str:
    """How the served blend's interval ``[mean, low, high]`` lies against another ranking's: "blend above" or
    "blend below" when they do not overlap, "overlap" when they do."""
    side = _side(served, other)
    return "" if side is None else f"{'blend ' if side[0] != 'overlap' else ''}{side[0]} by {_gap(side[1])}"


def _side(served: list[float] | None, other: list[float]) -> tuple[str, float] | None:
    """("above" | "below" | "overlap", by how much) of the served blend's interval against another's."""
    if served is None or any(math.isnan(v) for v in (*served[1:], *other[1:])):
        return None
    if intervals_overlap(served, other):
        return "overlap", min(served[2], other[2]) - max(served[1], other[1])
    if served[1] > other[2]:
        return "above", served[1] - other[2]
    return "below", other[1] - served[2]


def _gap(width: float) -> str:
    """Three decimals, four under 0.01: the blend clears the logistic regression by about 0.0015 on the large
    banks, which three decimals would round to 0.001 or 0.002."""
    return f"{width:.3f}" if width >= 0.01 else f"{width:.4f}"


# the rankings the served blend must clear (or, XGBoost alone, not fall below), as the verdict names them
VERDICT_BASELINES = {
    "logistic_regression": "the logistic regression's",
    "popularity": "popularity's",
    "xgboost": "XGBoost alone's",
}


def intervals_verdict(metrics: dict[str, Any], k: int = 3) -> str:
    """The simulated banks' done-when test in one line: where the served blend's MAP@k interval lies against the
    logistic regression's and popularity's, and against XGBoost alone (which it must not be below)."""
    rankings = metrics.get("rankings", {})
    served = rankings.get("blend", {}).get(f"map_at_{k}")
    said = []
    for name, whose in VERDICT_BASELINES.items():
        side = _side(served, rankings[name][f"map_at_{k}"]) if name in rankings else None
        if side is not None:
            verb = "overlaps" if side[0] == "overlap" else f"lies {side[0]}"
            said.append(f"{verb} {whose} by {_gap(side[1])}")
    return f"the served blend's MAP@{k} interval " + ", ".join(said) if said else "no rankings to compare"


def verdict(metrics: dict[str, Any], baseline: str) -> str:
    """'beats', 'loses to' or 'cannot be told from' a baseline, by the paired interval of the difference."""
    gain = metrics.get("blend_minus", {}).get(baseline)
    if not gain:
        return "was not compared with"
    return "beats" if gain[1] > 0 else "loses to" if gain[2] < 0 else "cannot be told from"
