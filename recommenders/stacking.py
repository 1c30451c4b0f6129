"""Blend weights learned on a validation cut, free of I/O.

The served blend is a weighted mean of the scorers' uptake probabilities plus the client's segment base rate
(``base_rate``: how often clients of the segment took the product up in training). Fixed weights dilute a
strong part with weak ones, so training scores a validation cut (the latest training cut, with models fitted
only on the cuts whose labels end before it) and picks the weights on a grid over the simplex that rank best
there. The grid includes every single source alone, so on the validation cut the blend is never worse than
its best part.

A few hundred validation clients make the best of 286 weightings partly luck: on banks where the other sources
add nothing, the chosen mixture moved from bank to bank and served worse than XGBoost alone on the holdout.
So a mixture is kept only when it beats the best single source on the validation clients with confidence:
picked on one half of the clients and compared on the other half with the single source that would be served
(both ways round), the lower end of a one-sided 95 % bootstrap interval of that held-out gain must be above
zero; otherwise the best single source is served alone. On banks where the other sources are noise a mixture
is then served in about 2-4 % of them (`tests/unit/test_stacking.py`).

Matrices here are rows x products; NaN means "this scorer did not score this product for this client", which
the blend reads as the product's base rate, exactly as ``decision.blend`` does at serving time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from recommenders.evaluation import mean_interval

SOURCES = ("xgboost", "als", "expert", "base_rate")
SERVER_ORDER = ("xgboost", "als", "expert")  # decision.MAIN_SCORERS, then the expert
GRID_STEPS = 10  # weights in tenths
RESAMPLES = 400  # bootstrap resamples of the validation clients for the mixture's gain
CONFIDENCE = 0.95  # one-sided: a mixture must beat the best single source at this level


def blend_matrix(sources: Mapping[str, np.ndarray], base: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """The blend of ``decision.blend`` for many clients at once: per row, a scorer takes part when it scored
    any product of the row; with no scorer at all the answer is the base rate."""
    total = np.zeros(len(base))
    weighted = np.zeros(base.shape)
    anyone = np.zeros(len(base), dtype=bool)  # some scorer answered for the row
    for name in SERVER_ORDER:  # the order decision.blend adds in: float sums differ in the last bit otherwise
        if name not in sources:
            continue
        matrix = sources[name]
        answered = ~np.all(np.isnan(matrix), axis=1)
        weight = weights.get(name, 1.0) * answered
        weighted += weight[:, None] * np.where(np.isnan(matrix), base, matrix)
        total += weight
        anyone |= answered
    total += weights.get("base_rate", 0.0)
    weighted += weights.get("base_rate", 0.0) * base
    blended = anyone & (total > 0)
    return np.where(blended[:, None], weighted / np.where(blended, total, 1.0)[:, None], base)  # type: ignore[no-any-return]


def average_precision_rows(scores: np.ndarray, labels: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """AP@k of each row's ranking among its allowed products (ties keep product order, as a stable sort does),
    for the rows with at least one allowed positive; the same figure as ``training.average_precision_at_k``."""
    relevant = (labels > 0) & (allowed > 0)
    rows = relevant.any(axis=1)
    ranked = np.argsort(np.where(allowed[rows] > 0, -scores[rows], np.inf), axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant[rows], ranked, axis=1).astype(np.float64)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return (precision * hits).sum(axis=1) / np.minimum(relevant[rows].sum(axis=1), k)  # type: ignore[no-any-return]


def weight_grid(sources: tuple[str, ...] = SOURCES, steps: int = GRID_STEPS) -> list[dict[str, float]]:
    """Every weighting in steps of 1/steps that sums to one (286 for four sources in tenths)."""
    grid = []
    for parts in itertools.product(range(steps + 1), repeat=len(sources) - 1):
        if sum(parts) <= steps:
            grid.append({s: p / steps for s, p in zip(sources, (*parts, steps - sum(parts)), strict=True)})
    return grid


@dataclass(frozen=True)
class LearnedBlend:
    weights: dict[str, float]
    validation_map: float  # mean AP@k of the chosen weights on the validation cut
    alone: dict[str, float]  # each source alone on the validation cut, for the report
    clients: int  # validation rows with an uptake
    # The mean held-out MAP@k gain of a mixture picked on the other half of the clients over the single source
    # served, and the lower end of its one-sided interval; the mixture is served only when that is above zero.
    mixture_gain: float = 0.0
    mixture_gain_low: float = 0.0


def learn_weights(
    sources: Mapping[str, np.ndarray],
    base: np.ndarray,
    labels: np.ndarray,
    allowed: np.ndarray,
    k: int,
    groups: np.ndarray | None = None,
) -> LearnedBlend:
    """The grid weighting with the best validation MAP@k, when a mixture beats the best single source with
    confidence; the best single source otherwise. Ties go to the earlier grid point (the base rate first: the
    simplest model). ``groups`` names each row's client (default: a client a row).

    The confidence is cross-fitted: the best of 286 weightings on the rows it was picked on always looks a
    little better than it is, so the clients are split in two, the mixture is picked on one half and compared
    on the other with the single source picked on all clients (the one that would be served; a single source
    picked on a small half is often a poor one, which flatters the mixture), both ways round, and the
    bootstrap bounds those held-out gains."""
    # a source that scored nobody here is absent: alone it would tie with the base rate, unvalidated
    present = {name: m for name, m in sources.items() if not np.all(np.isnan(m))}
    names = tuple(s for s in SOURCES if s in present or s == "base_rate")
    everything = {**present, "base_rate": base}
    grid = weight_grid(names)
    # AP@k of every weighting (grid x validation rows with an uptake)
    ap = np.stack([average_precision_rows(blend_matrix(everything, base, w), labels, allowed, k) for w in grid])
    single_of = {max(w, key=lambda s: w[s]): i for i, w in enumerate(grid) if max(w.values()) == 1.0}
    singles = np.array(sorted(single_of.values()))
    everyone = np.arange(len(grid))
    relevant = ((labels > 0) & (allowed > 0)).any(axis=1)
    if groups is not None and len(groups) != len(labels):
        raise ValueError(f"groups names {len(groups)} rows' clients, the validation has {len(labels)} rows")
    row_groups = (np.asarray(groups) if groups is not None else np.arange(len(labels)))[relevant]
    rows = np.ones(ap.shape[1], dtype=bool)
    mixture, single = _best(ap, everyone, rows), _best(ap, singles, rows)
    gain = _held_out_gain(ap, everyone, single, row_groups)
    # the lower end of a two-sided interval at 2 * CONFIDENCE - 1 is the one-sided CONFIDENCE bound (fixed seed:
    # the same data choose the same blend)
    low = mean_interval(gain, RESAMPLES, 0, 2 * CONFIDENCE - 1, list(row_groups)).low if np.any(gain) else 0.0
    chosen = mixture if low > 0 else single
    # a source without scores here gets weight 0, not the blend's default of 1 for a source it is not told of
    weights = {s: grid[chosen].get(s, 0.0) for s in SOURCES}
    alone = {s: float(ap[i].mean()) if ap.shape[1] else 0.0 for s, i in single_of.items()}
    score = float(ap[chosen].mean()) if ap.shape[1] else 0.0
    return LearnedBlend(weights, score, alone, int(relevant.sum()), float(gain.mean()) if len(gain) else 0.0, low)


def _best(ap: np.ndarray, candidates: np.ndarray, rows: np.ndarray) -> int:
    """The candidate weighting with the best mean AP on ``rows``; the earliest on a tie (float noise aside)."""
    if not rows.any():
        return int(candidates[0])
    scores = ap[candidates][:, rows].mean(axis=1)
    return int(candidates[np.flatnonzero(scores >= scores.max() - 1e-12)[0]])


def _held_out_gain(ap: np.ndarray, everyone: np.ndarray, single: int, groups: np.ndarray) -> np.ndarray:
    """Per row, the gain of the best mixture picked on the other half of the clients over the served single
    source (two folds of whole clients, a fixed seed of its own)."""
    clients = np.unique(groups)
    half = np.isin(groups, np.random.default_rng(1).permutation(clients)[: len(clients) // 2])
    gain = np.zeros(len(groups))
    for test in (half, ~half):
        gain[test] = ap[_best(ap, everyone, ~test), test] - ap[single, test]
    return gain
