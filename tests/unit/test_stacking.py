"""Blend weights learned on a validation cut (``recommenders.stacking``): the vectorised blend and AP@k equal
the server's ``decision.blend`` and ``holdout.average_precision_at_k`` row by row (including scorers that
answered nothing for a row, and the base-rate weight); the weight grid covers the simplex and every source
alone; and the learned weights find the informative source and are never worse on the validation cut than
any single source, while a mixture is served only when it beats the best single source with confidence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommenders.decision import blend
from recommenders.holdout import average_precision_at_k
from recommenders.scorer import ProductScore
from recommenders.stacking import SOURCES, average_precision_rows, blend_matrix, learn_weights, weight_grid

PRODUCTS = [f"p{j}" for j in range(6)]
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def random_case(seed: int, rows: int = 30) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Scorer matrices with gaps (whole rows unscored too), base rates, 0/1 labels and an allowed mask."""
    rng = np.random.default_rng(seed)
    shape = (rows, len(PRODUCTS))
    allowed = (rng.random(shape) < 0.8).astype(np.float32)
    sources = {}
    for name in ("xgboost", "expert", "als"):  # not the server's order: the blend must not depend on it
        matrix = rng.random(shape)
        matrix[rng.random(shape) < 0.3] = np.nan
        matrix[rng.random(rows) < 0.2] = np.nan  # this scorer answered nothing for these clients
        sources[name] = np.where(allowed > 0, matrix, np.nan)
    base = rng.random(shape) * 0.2
    labels = (rng.random(shape) < 0.25).astype(np.float32)
    return sources, base, labels, allowed


@PROPERTY
@given(st.integers(0, 10_000), st.sampled_from(weight_grid(SOURCES, 4)))
def test_the_vectorised_blend_is_the_servers_blend(seed: int, weights: dict[str, float]) -> None:
    sources, base, _, allowed = random_case(seed)
    matrix = blend_matrix(sources, base, weights)
    for i in range(len(base)):
        products = [p for j, p in enumerate(PRODUCTS) if allowed[i, j] > 0]
        results = {
            name: {p: ProductScore(p, float(m[i, j])) for j, p in enumerate(PRODUCTS) if not np.isnan(m[i, j])}
            for name, m in sources.items()
        }
        served = blend(products, results, weights, dict(zip(PRODUCTS, base[i].tolist(), strict=True)))
        for product, (score, _) in served.items():
            assert matrix[i, PRODUCTS.index(product)] == score  # exactly: a last-bit difference flips near-ties


@PROPERTY
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_vectorised_average_precision_equals_the_per_client_one(seed: int, k: int) -> None:
    sources, _, labels, allowed = random_case(seed)
    scores = np.nan_to_num(sources["xgboost"])
    expected = []
    for i in range(len(labels)):
        products = [p for j, p in enumerate(PRODUCTS) if allowed[i, j] > 0]
        relevant = {p for j, p in enumerate(PRODUCTS) if allowed[i, j] > 0 and labels[i, j] > 0}
        if relevant:
            ranked = sorted(products, key=lambda p: -scores[i, PRODUCTS.index(p)])
            expected.append(average_precision_at_k(ranked, relevant, k))
    assert average_precision_rows(scores, labels, allowed, k).tolist() == pytest.approx(expected)


def test_the_grid_covers_the_simplex_and_every_source_alone() -> None:
    grid = weight_grid()
    assert len(grid) == 286  # C(13, 3): four weights in tenths summing to one
    assert all(sum(w.values()) == pytest.approx(1.0) and set(w) == set(SOURCES) for w in grid)
    for source in SOURCES:
        assert {s: float(s == source) for s in SOURCES} in grid


def test_learned_weights_follow_the_informative_source_and_beat_every_source_alone() -> None:
    rng = np.random.default_rng(3)
    rows = 400
    shape = (rows, len(PRODUCTS))
    truth = rng.random(shape)
    labels = (truth > 0.85).astype(np.float32)
    allowed = np.ones(shape, dtype=np.float32)
    sources = {
        "xgboost": np.clip(truth + rng.normal(0, 0.05, shape), 0, 1),  # knows the truth
        "als": rng.random(shape),  # noise
        "expert": rng.random(shape),  # noise
    }
    base = np.tile(rng.random(len(PRODUCTS)) * 0.1, (rows, 1))
    learned = learn_weights(sources, base, labels, allowed, 3)
    assert learned.weights["xgboost"] >= 0.7
    assert learned.validation_map >= max(learned.alone.values())
    assert learned.alone["xgboost"] > learned.alone["als"] + 0.2
    assert learned.clients == int(labels.any(axis=1).sum())


def test_a_source_missing_on_validation_gets_weight_zero_not_the_default() -> None:
    sources, base, labels, allowed = random_case(7)
    del sources["als"]  # e.g. nobody held a product at the validation cut
    learned = learn_weights(sources, base, labels, allowed, 3)
    assert set(learned.weights) == set(SOURCES) and learned.weights["als"] == 0.0


def _informative(rng: np.random.Generator, truth: np.ndarray, knows: np.ndarray) -> np.ndarray:
    """Scores that follow the truth on the products ``knows`` marks and are noise on the others."""
    return np.where(knows, np.clip(truth + rng.normal(0, 0.3, truth.shape), 0, 1), rng.random(truth.shape))


def _noise_bank(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """XGBoost follows the truth; ALS and the expert are noise. 300 validation clients."""
    rng = np.random.default_rng(seed)
    shape = (300, len(PRODUCTS))
    truth = rng.random(shape)
    sources = {
        "xgboost": _informative(rng, truth, np.ones(shape, dtype=bool)),
        "als": rng.random(shape),
        "expert": rng.random(shape),
    }
    base = np.tile(rng.random(len(PRODUCTS)) * 0.1, (300, 1))
    return sources, base, (truth > 0.85).astype(np.float32), np.ones(shape)


def test_sources_that_only_look_better_by_luck_stay_out_of_the_blend() -> None:
    """Even when the other sources are noise, a mixture can do a little better than XGBoost alone on these
    clients by chance; that gain is not confident, so XGBoost is served alone."""
    sources, base, labels, allowed = _noise_bank(0)
    learned = learn_weights(sources, base, labels, allowed, 3)
    in_sample = max(
        average_precision_rows(blend_matrix({**sources, "base_rate": base}, base, w), labels, allowed, 3).mean()
        for w in weight_grid()
    )
    assert in_sample > learned.alone["xgboost"] + 0.005  # on these very clients some mixture looks better
    assert learned.mixture_gain_low <= 0
    assert learned.weights == {"xgboost": 1.0, "als": 0.0, "expert": 0.0, "base_rate": 0.0}
    assert learned.validation_map == learned.alone["xgboost"]


def test_sources_that_know_different_products_are_blended() -> None:
    rng = np.random.default_rng(1)
    shape = (300, len(PRODUCTS))
    truth = rng.random(shape)
    labels = (truth > 0.85).astype(np.float32)
    first_half = np.arange(len(PRODUCTS)) < len(PRODUCTS) // 2
    sources = {
        "xgboost": _informative(rng, truth, np.tile(first_half, (300, 1))),
        "expert": _informative(rng, truth, np.tile(~first_half, (300, 1))),
    }
    base = np.tile(rng.random(len(PRODUCTS)) * 0.1, (300, 1))
    learned = learn_weights(sources, base, labels, np.ones(shape), 3)
    assert learned.mixture_gain_low > 0
    assert learned.weights["xgboost"] > 0 and learned.weights["expert"] > 0
    assert learned.validation_map > max(learned.alone.values()) + 0.02


def test_a_clients_rows_count_once() -> None:
    """Four rows of each client (four cuts) are one client's evidence, not four: with ``groups`` the folds and
    the bootstrap take whole clients, and the verdict is the one of a row per client; without, the interval
    narrows as if there were four times as many clients."""
    rng = np.random.default_rng(2)
    shape = (150, len(PRODUCTS))
    truth = rng.random(shape)
    labels = (truth > 0.85).astype(np.float32)
    sources = {"xgboost": _informative(rng, truth, np.ones(shape, dtype=bool)), "expert": rng.random(shape)}
    base = np.tile(rng.random(len(PRODUCTS)) * 0.1, (150, 1))
    once = learn_weights(sources, base, labels, np.ones(shape), 3)
    copies = {name: np.repeat(m, 4, axis=0) for name, m in sources.items()}
    four = (np.repeat(base, 4, axis=0), np.repeat(labels, 4, axis=0), np.ones((600, len(PRODUCTS))))
    grouped = learn_weights(copies, *four, 3, groups=np.repeat(np.arange(150), 4))
    assert grouped.mixture_gain_low == pytest.approx(once.mixture_gain_low)
    assert grouped.weights == once.weights
    assert learn_weights(copies, *four, 3).mixture_gain_low != pytest.approx(once.mixture_gain_low)


def test_a_source_that_scored_nobody_is_not_served() -> None:
    """All-NaN scores read as the base rate: alone, such a source would tie with it and could be served with
    nothing validating it."""
    rng = np.random.default_rng(4)
    shape = (200, len(PRODUCTS))
    labels = (rng.random(shape) > 0.85).astype(np.float32)
    base = np.tile(np.linspace(0.2, 0.01, len(PRODUCTS)), (200, 1))
    labels[:, 0] = 1.0  # the base rate's favourite is everyone's uptake: the base rate is the best source
    sources = {"xgboost": rng.random(shape), "als": np.full(shape, np.nan)}
    learned = learn_weights(sources, base, labels, np.ones(shape), 3)
    assert learned.weights["als"] == 0.0 and learned.weights["base_rate"] == 1.0


def test_a_mixture_of_noise_is_served_in_few_banks() -> None:
    """The rule's error rate: over 60 banks where ALS and the expert are noise, a mixture is served in at most
    5 % of them (picking and judging on the same clients served one in about eight)."""
    served = sum(max(learn_weights(*_noise_bank(100 + seed), 3).weights.values()) < 1.0 for seed in range(60))
    assert served <= 3
