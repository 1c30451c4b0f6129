"""XGBoost micro-batching (``recommenders.xgb``) with tiny boosters trained here on random data: concurrent
``score()`` calls are served by fewer batch predictions than requests, with the same probabilities and reasons
as scoring each row alone and as XGBoost's own ``predict`` gives; batches never exceed ``MAX_BATCH``; a request that
gave up before its batch is not predicted; a failing prediction reaches every waiting caller instead of
leaving them hanging, and the scorer keeps working afterwards."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest
import xgboost as xgb

from recommenders import xgb as xgb_module
from recommenders.profile import ClientSnapshot, FeatureSpace
from recommenders.scorer import ProductScore
from recommenders.xgb import XGBoostScorer

VIEW = ["sum(tx.out.amount, 30d)", "avg(balance, 90d)", "count(tx.in.salary, 90d)", "last(profile.segment)"]
PRODUCTS = ["deposit", "credit_card", "mortgage"]
NOW = 1.79e9
# No hang means an answer within this; a healthy batch of tiny models takes milliseconds.
NO_HANG_S = 5.0


@pytest.fixture(scope="module")
def space() -> FeatureSpace:
    return FeatureSpace.from_view(VIEW)


@pytest.fixture(scope="module")
def boosters(space: FeatureSpace) -> dict[str, xgb.Booster]:
    """Few shallow trees per product on 300 random rows (with gaps): fast and deterministic."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(300, len(space.names))).astype(np.float32)
    features[rng.random(features.shape) < 0.1] = np.nan
    out = {}
    for j, product in enumerate(PRODUCTS):
        labels = (features[:, j] + 0.5 * rng.normal(size=300) > 0).astype(np.float32)
        matrix = xgb.DMatrix(features, label=labels, feature_names=space.names)
        params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 1}
        out[product] = xgb.train(params, matrix, num_boost_round=5)
    return out


@pytest.fixture
def scorer(space: FeatureSpace, boosters: dict[str, xgb.Booster]) -> XGBoostScorer:
    return XGBoostScorer("t1", space, boosters)


def clients(n: int, seed: int = 3) -> list[ClientSnapshot]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        values: dict[str, object] = {
            "sum(tx.out.amount,30d)": float(rng.gamma(2.0, 500.0)),
            "avg(balance,90d)": float(rng.normal(1000.0, 800.0)),
            "count(tx.in.salary,90d)": int(rng.integers(0, 4)) if i % 4 else None,  # some without data
        }
        out.append(ClientSnapshot(f"c{i}", NOW, values, "retail", 20.0 + i % 50, 10.0 * i, set(), set()))
    return out


def products_for(i: int) -> list[str]:
    """Requests ask about different products (one asks for a product without a model)."""
    return [PRODUCTS[(i + j) % len(PRODUCTS)] for j in range(1 + i % len(PRODUCTS))] + ["no_model"]


class BatchSpy:
    """Wraps the scorer's batch prediction (``score_rows``, what the worker runs in a thread) and records
    each batch's size and thread."""

    def __init__(self, scorer: XGBoostScorer, error: Exception | None = None) -> None:
        self.predict = scorer.score_rows
        self.error = error
        self.sizes: list[int] = []
        self.threads: list[int] = []
        scorer.score_rows = self  # type: ignore[method-assign]

    def __call__(self, matrix: np.ndarray, products: Sequence[Sequence[str]]) -> list[dict[str, ProductScore]]:
        self.sizes.append(len(matrix))
        self.threads.append(threading.get_ident())
        if self.error is not None:
            raise self.error
        return self.predict(matrix, products)


async def test_concurrent_requests_are_batched_and_score_as_if_alone(
    scorer: XGBoostScorer, space: FeatureSpace
) -> None:
    snapshots = clients(40)
    alone = [scorer.score_row(c.vector(space), products_for(i)) for i, c in enumerate(snapshots)]
    spy = BatchSpy(scorer)

    batched = await asyncio.wait_for(
        asyncio.gather(*(scorer.score(c, products_for(i)) for i, c in enumerate(snapshots))), NO_HANG_S
    )

    assert sum(spy.sizes) == len(snapshots) and len(spy.sizes) < len(snapshots)
    assert max(spy.sizes) > 1
    for i, (got, expected) in enumerate(zip(batched, alone, strict=True)):
        assert set(got) == set(products_for(i)) - {"no_model"}, i
        assert set(got) == set(expected)
        for product, score in got.items():
            assert score.product == product
            assert score.score == pytest.approx(expected[product].score, abs=1e-6)
            assert 0.0 < score.score < 1.0
            assert score.reasons == expected[product].reasons
    assert sum(bool(s.reasons) for got in batched for s in got.values()) > len(snapshots)  # reasons compared too
    # the forest the scorer walks gives XGBoost's own probabilities
    matrix = np.vstack([c.vector(space) for c in snapshots])
    for product, booster in scorer.boosters.items():
        expected = booster.predict(xgb.DMatrix(matrix, feature_names=space.names))
        got_scores = [b[product].score if product in b else None for b in batched]
        for i, score in enumerate(got_scores):
            if score is not None:
                assert score == pytest.approx(float(expected[i]), abs=1e-6)


async def test_batches_never_exceed_the_maximum(scorer: XGBoostScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xgb_module, "MAX_BATCH", 8)
    spy = BatchSpy(scorer)
    answers = await asyncio.wait_for(asyncio.gather(*(scorer.score(c, PRODUCTS) for c in clients(30))), NO_HANG_S)
    assert len(answers) == 30 and all(set(a) == set(PRODUCTS) for a in answers)
    assert sum(spy.sizes) == 30 and max(spy.sizes) <= 8 and len(spy.sizes) >= 4


async def test_a_request_that_gave_up_before_its_batch_is_not_predicted(scorer: XGBoostScorer) -> None:
    spy = BatchSpy(scorer)
    tasks = [asyncio.create_task(scorer.score(c, PRODUCTS)) for c in clients(5)]
    await asyncio.sleep(0)  # every request queued its row; the worker has not taken the batch yet
    assert spy.sizes == []
    tasks[2].cancel()  # its budget ran out
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), NO_HANG_S)

    assert isinstance(done[2], asyncio.CancelledError)
    assert all(isinstance(d, dict) and set(d) == set(PRODUCTS) for i, d in enumerate(done) if i != 2)
    assert spy.sizes == [4]


async def test_a_failing_prediction_reaches_every_waiting_caller(scorer: XGBoostScorer, space: FeatureSpace) -> None:
    spy = BatchSpy(scorer, error=RuntimeError("booster exploded"))
    snapshots = clients(12)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(scorer.score(c, PRODUCTS) for c in snapshots), return_exceptions=True), NO_HANG_S
    )
    assert len(spy.sizes) < len(snapshots)  # batched, then failed together
    assert all(isinstance(o, RuntimeError) and str(o) == "booster exploded" for o in outcomes)

    # the worker survived: the next requests are answered
    spy.error = None
    answer = await asyncio.wait_for(scorer.score(snapshots[0], PRODUCTS), NO_HANG_S)
    expected = scorer.score_row(snapshots[0].vector(space), PRODUCTS)
    assert {p: s.score for p, s in answer.items()} == pytest.approx({p: s.score for p, s in expected.items()})


async def test_a_failing_prediction_with_many_batches_fails_each_request_once(
    scorer: XGBoostScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every queued batch is tried and failed; none is left waiting behind the first failure."""
    monkeypatch.setattr(xgb_module, "MAX_BATCH", 4)
    spy = BatchSpy(scorer, error=ValueError("bad matrix"))
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(scorer.score(c, PRODUCTS) for c in clients(10)), return_exceptions=True), NO_HANG_S
    )
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert spy.sizes == [4, 4, 2]
