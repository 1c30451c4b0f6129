"""Ranking metrics with confidence intervals, free of I/O.

A holdout of a few hundred clients gives MAP@3 differences of 0.05 that are noise, so every ranking metric is
reported with a 95 % percentile bootstrap interval over clients (whole clients, when a client has rows at
several holdout cuts), and a model is compared with a baseline by the interval of the mean *paired*
difference (the same resampled clients for both): that answers "is the blend better than popularity on these
clients" directly, and more tightly than two overlapping intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

ROUNDS = 2000
LEVEL = 0.95
# Below this many positives on the holdout a product's AUC is reported with a warning: its interval is wide.
MIN_POSITIVES = 10


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [round(self.mean, 4), round(self.low, 4), round(self.high, 4)]


def format_interval(values: object, signed: bool = False, missing: str = "-") -> str:
    """``[mean, low, high]`` (as ``Interval.as_list`` gives it in reports) as "0.731 [0.693, 0.767]"; a sign on
    every figure for a difference; ``missing`` for anything else."""
    if not isinstance(values, list | tuple) or len(values) != 3:
        return missing
    sign = "+" if signed else ""
    mean, low, high = values
    return f"{mean:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]"


def _resamples(n: int, rounds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


def _bounds(estimates: np.ndarray, level: float) -> tuple[float, float]:
    if len(estimates) == 0:  # no round could be computed (every draw of a tiny holdout held one class)
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(
    values: Sequence[float] | np.ndarray,
    rounds: int = ROUNDS,
    seed: int = 0,
    level: float = LEVEL,
    groups: Sequence[str] | None = None,
) -> Interval:
    """The mean of per-row values with its bootstrap interval. With ``groups`` (the client of each row, when a
    client has rows at several cuts) whole clients are resampled: rows of one client are not independent, and
    resampling them one by one would make the interval too narrow."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        return Interval(math.nan, math.nan, math.nan)
    if groups is None:
        means = data[_resamples(len(data), rounds, seed)].mean(axis=1)
    else:
        _, index = np.unique(np.asarray(groups), return_inverse=True)
        sums, counts = np.bincount(index, weights=data), np.bincount(index)
        picks = _resamples(len(sums), rounds, seed)
        means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return Interval(float(data.mean()), *_bounds(means, level))


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    rounds: int = ROUNDS,
    seed: int = 0,
    level: float = LEVEL,
    groups: Sequence[str] | None = None,
) -> Interval:
    """Mean of a - b over the same rows, with the bootstrap interval of that mean (by client with ``groups``)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return mean_interval(diff, rounds, seed, level, groups)


# Bootstrap rounds are computed this many at a time: a (rounds x rows) weight matrix for a 50,000-row holdout
# and 500 rounds would be 200 MB at once.
BLOCK = 64


def _weight_blocks(n: int, rounds: int, seed: int, groups: Sequence[str] | None) -> Iterator[np.ndarray]:
    """How often each row is drawn in each bootstrap round, ``BLOCK`` rounds (x rows) at a time: rows one by one,
    or whole clients with ``groups`` (a client drawn twice brings all its rows twice). The draws are those of
    ``mean_interval`` (drawn a block at a time from the same generator: the same numbers as drawing them all at
    once)."""
    if groups is None:
        row_unit = np.arange(n)
    else:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} groups for {n} rows")
        _, row_unit = np.unique(np.asarray(groups), return_inverse=True)
    units = int(row_unit.max()) + 1
    rng = np.random.default_rng(seed)
    for first in range(0, rounds, BLOCK):
        block = rng.integers(0, units, size=(min(BLOCK, rounds - first), units))
        offsets = units * np.arange(len(block))[:, None]
        counts = np.bincount((block + offsets).ravel(), minlength=len(block) * units).reshape(len(block), units)
        yield counts[:, row_unit].astype(np.float64)


def _auc_of_draws(labels: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function from draw counts (rounds x rows: each row drawn that many times) to each round's ROC AUC, NaN
    where a draw holds one class.

    The same figure as ``roc_auc_score`` on the drawn rows (a row drawn twice is a tie with itself; ties count
    half), from one sort of the scores for every round: for every distinct score, the positives' weight there
    times the negatives' weight below it plus half the negatives' weight at it.
    """
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite: a NaN would rank as the highest score")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    tie_group = np.concatenate(([0], np.cumsum(sorted_scores[1:] != sorted_scores[:-1])))
    groups = int(tie_group[-1]) + 1
    positive = labels[order] == labels.max()  # the greater label is the positive class, as in roc_auc_score

    def aucs(weights: np.ndarray) -> np.ndarray:
        w = weights[:, order]
        rounds = w.shape[0]
        flat = (tie_group + groups * np.arange(rounds)[:, None]).ravel()
        pos = np.bincount(flat, weights=(w * positive).ravel(), minlength=rounds * groups).reshape(rounds, groups)
        neg = np.bincount(flat, weights=(w * ~positive).ravel(), minlength=rounds * groups).reshape(rounds, groups)
        below = np.cumsum(neg, axis=1) - neg
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        wins = (pos * (below + 0.5 * neg)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, wins / pairs, np.nan)

    return aucs


def auc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    rounds: int = 500,
    seed: int = 0,
    level: float = LEVEL,
    groups: Sequence[str] | None = None,
) -> Interval | None:
    """ROC AUC with a bootstrap interval over rows (over clients with ``groups``); None with only one class."""
    return _auc_statistic(labels, [np.asarray(scores, dtype=np.float64)], rounds, seed, level, groups)


def auc_difference(
    labels: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rounds: int = 500,
    seed: int = 0,
    level: float = LEVEL,
    groups: Sequence[str] | None = None,
) -> Interval | None:
    """AUC of scores ``a`` minus AUC of scores ``b`` on the same rows, with the bootstrap interval of the
    difference (the same resampled rows for both): whether one model ranks a product's takers better."""
    scores = [np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)]
    return _auc_statistic(labels, scores, rounds, seed, level, groups)


def _auc_statistic(
    labels: np.ndarray,
    scores: list[np.ndarray],
    rounds: int,
    seed: int,
    level: float,
    groups: Sequence[str] | None,
) -> Interval | None:
    """The AUC of ``scores[0]`` (minus that of ``scores[1]`` when given) on all rows, with its bootstrap interval
    over the rounds whose draw holds both classes; None when the labels hold one class."""
    y = np.asarray(labels)
    if y.min() == y.max():
        return None
    for values in scores:
        if len(values) != len(y):
            raise ValueError(f"{len(values)} scores for {len(y)} labels")

    aucs = [_auc_of_draws(y, values) for values in scores]

    def statistic(weights: np.ndarray) -> np.ndarray:
        value = aucs[0](weights)
        return value if len(aucs) == 1 else value - aucs[1](weights)

    estimates = np.concatenate([statistic(block) for block in _weight_blocks(len(y), rounds, seed, groups)])
    estimates = estimates[~np.isnan(estimates)]
    return Interval(float(statistic(np.ones((1, len(y))))[0]), *_bounds(estimates, level))


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """NDCG@k with binary relevance (a product listed twice counts once); 0 with nothing relevant."""
    if not relevant:
        return 0.0
    seen: set[str] = set()
    gain = 0.0
    for position, product in enumerate(ranked[:k], start=1):
        if product in relevant and product not in seen:
            seen.add(product)
            gain += 1 / math.log2(position + 1)
    ideal = sum(1 / math.log2(position + 1) for position in range(1, min(len(relevant), k) + 1))
    return gain / ideal
