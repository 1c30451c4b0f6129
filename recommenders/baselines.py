"""The baselines every model is compared with on the same holdout, fitted on the same training rows:
popularity per segment (also the blend's base rates) and a logistic regression per product on the same
features."""

from __future__ import annotations

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from recommenders.dataset import Dataset
from recommenders.expert import _squash


def popularity(data: Dataset, products: list[str]) -> dict[str, float]:
    """Each product's uptake rate among the rows where it could be taken up."""
    rate = (data.labels * data.mask).sum(0) / np.maximum(data.mask.sum(0), 1)
    return {p: float(rate[j]) for j, p in enumerate(products)}


def segment_popularity(data: Dataset, products: list[str]) -> dict[str, dict[str, float]]:
    """segment -> each product's uptake rate among the rows of the segment ("" for an unknown segment)."""
    segments = np.array([s.segment or "" for s in data.snapshots])
    return {segment: popularity(data.where(segments == segment), products) for segment in sorted(set(segments))}


def base_rate_matrix(
    data: Dataset, products: list[str], by_segment: dict[str, dict[str, float]], overall: dict[str, float]
) -> np.ndarray:
    """rows x products: the base rates of each row's segment (overall rates for a segment not seen)."""
    return np.array(
        [
            [by_segment.get(s.segment or "", overall).get(p, overall.get(p, 0.0)) for p in products]
            for s in data.snapshots
        ],
        dtype=np.float64,
    ).reshape(len(data.snapshots), len(products))


def logistic_scores(train_set: Dataset, holdout: Dataset, products: list[str]) -> dict[str, np.ndarray]:
    """A logistic regression per product on the same features (signed log, median-imputed, standardised),
    fitted on the training rows; its probabilities for every holdout row."""
    scores = {}
    for j, product in enumerate(products):
        rows = train_set.mask[:, j] > 0
        y = train_set.labels[rows, j]
        if not 0 < y.sum() < len(y):
            continue
        model = make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(max_iter=500),
        )
        model.fit(_squash(train_set.features[rows]), y)
        scores[product] = model.predict_proba(_squash(holdout.features))[:, 1]
    return scores
