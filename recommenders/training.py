"""`rtrec train`: point-in-time dataset -> per-product XGBoost + ALS + expert statistics -> blend weights ->
holdout metrics -> a versioned artifact directory, a report, and the LATEST pointer the servers hot-reload from.

Time split: the latest cuts are the holdout (their labels end at `end`); the training cuts are those whose
label windows end by the first holdout cut, so nothing learns from a holdout window. The latest training cut is
the validation cut: models fitted on the cuts whose labels end before it choose each booster's shape and the
blend's weights there (``recommenders.boosting``, ``recommenders.stacking``). Then the recipe is fitted on all
training cuts and measured on the holdout beside the baselines (``recommenders.holdout``), and fitted once more
on every labelled row, the holdout's included, for serving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xgboost as xgb
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from feature_store.client import FeatureStore
from feature_store.files import write_atomically
from feature_store.listings import interactions, list_subjects
from feature_store.ttl import TtlPolicy
from recommenders import baselines
from recommenders.als import ALSScorer, interaction_matrix, train_als
from recommenders.boosting import BoosterShape, choose_shapes, fit_boosters
from recommenders.catalogue import Catalogue, load_catalogue
from recommenders.config import TrainingConfig as TrainingSettings
from recommenders.dataset import CONCURRENCY, DAY, Dataset, build_dataset
from recommenders.expert import ExpertScorer, _squash
from recommenders.holdout import evaluate_sources, score_sources
from recommenders.profile import FeatureSpace, model_space
from recommenders.registry import file_digests
from recommenders.stacking import LearnedBlend, learn_weights
from recommenders.xgb import XGBoostScorer

# (client id, cut time) -> product -> a known chance of uptake (a simulated bank's own), ranked beside the
# models on the holdout: how much of the signal that drew the uptake the models recover.
ReferenceChances = Callable[[str, float], dict[str, float]]

# Fewer validation clients with an uptake than this: keep the default booster shapes and the catalogue's
# blend weights (a choice made on a handful of clients is noise).
MIN_VALIDATION_CLIENTS = 20

log = logging.getLogger(__name__)


class TrainingSetupError(ValueError):
    """Training cannot start: the cuts leave no training cut, or the store has no rows before the holdout."""


@dataclass(frozen=True)
class TrainingConfig:
    end: float | None = None  # default: now
    horizon_days: float = 30.0
    step_days: float = 7.0  # between training cuts: weekly rows give the boosters several looks at each uptake
    cuts: int = 12  # the holdout cuts and the training cuts together
    holdout_cuts: int = 1  # more, step_days apart, evaluate more clients (each resampled whole)
    k: int = 3
    progress: bool = True
    # clients read from the store at a time: as many as help on a store that serves nothing (evaluation, the
    # demo); `rtrec train` against a serving store reads gently (recommendations.training_read_concurrency)
    read_concurrency: int = CONCURRENCY
    # the store holds nothing older (a simulated bank's first day): a window reaching further back loses
    # nothing to the TTL, so no warning is due for it
    history_start: float | None = None

    def __post_init__(self) -> None:
        if self.holdout_cuts < 1 or self.cuts <= self.holdout_cuts:
            raise TrainingSetupError(
                f"cuts ({self.cuts}) counts the holdout cuts ({self.holdout_cuts}) and at least one training cut"
            )


def population_stats(squashed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of each (signed-log) feature over the clients that have it; a feature nobody has
    (Berka has no salary flag, for instance) gets mean 0 and spread 1 instead of NaN."""
    present = ~np.isnan(squashed)
    counts = present.sum(axis=0)
    filled = np.where(present, squashed, 0.0)
    mean = filled.sum(axis=0) / np.maximum(counts, 1)
    spread = np.sqrt((np.where(present, squashed - mean, 0.0) ** 2).sum(axis=0) / np.maximum(counts, 1))
    return mean.astype(np.float32), np.where(counts > 1, spread, 1.0).astype(np.float32)


def holdout_times(config: TrainingConfig) -> list[float]:
    """The holdout cuts: the latest at ``end`` - horizon, the others ``step_days`` before it."""
    end = config.end if config.end is not None else time.time()
    latest = end - config.horizon_days * DAY
    return sorted(latest - i * config.step_days * DAY for i in range(config.holdout_cuts))


def cut_times(config: TrainingConfig) -> list[float]:
    """The holdout cuts and the training cuts ``step_days`` apart, the latest of which is a whole horizon before
    the earliest holdout cut: a cut in between would have labels inside a holdout window."""
    holdouts = holdout_times(config)
    latest_training = holdouts[0] - config.horizon_days * DAY
    training = [latest_training - i * config.step_days * DAY for i in range(config.cuts - config.holdout_cuts)]
    return sorted([*holdouts, *training])


def windows_cut_short(space: FeatureSpace, config: TrainingConfig, ttl: TtlPolicy) -> list[str]:
    """The view's windows that reach back, at the earliest cut, past what the store keeps (``time_use`` + TTL
    after now): on a store older than its TTL they would be cut short at training time and whole at serving."""
    end = config.end if config.end is not None else time.time()
    back = end - min(cut_times(config))
    history = end - config.history_start if config.history_start is not None else math.inf
    return [
        s.label
        for s in space.view
        if s.window_s and back + s.window_s > (keep := ttl.shortest_days(s.feature) * DAY) and history > keep
    ]


def _als_inputs(data: Dataset, products: list[str]) -> list[tuple[str, str, str]]:
    rows = []
    for snapshot in data.snapshots:
        rows += [(snapshot.client_id, p, "held") for p in snapshot.held if p in products]
        rows += [(snapshot.client_id, p, "applied") for p in snapshot.applied if p in products]
    return rows


@dataclass
class FittedModels:
    """What training fits on a set of training rows: XGBoost boosters, the expert's population statistics,
    popularity overall and per segment (the blend's base rates)."""

    boosters: dict[str, xgb.Booster]
    mean: np.ndarray
    std: np.ndarray
    popularity: dict[str, float]
    segment_popularity: dict[str, dict[str, float]]
    train_set: Dataset  # the baselines of the evaluation are fitted on it too


@dataclass
class Validation:
    """What the validation cut chose (``blend`` None: too few validation clients, defaults kept)."""

    shapes: dict[str, BoosterShape]
    blend: LearnedBlend | None
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "learned": self.blend is not None,
            **(
                {
                    "clients": self.blend.clients,
                    "weights": self.blend.weights,
                    "map": round(self.blend.validation_map, 4),
                    "map_alone": {s: round(v, 4) for s, v in self.blend.alone.items()},
                    # a mixture's held-out gain over the single source served, and the lower end of its interval
                    "mixture_gain": [round(self.blend.mixture_gain, 4), round(self.blend.mixture_gain_low, 4)],
                }
                if self.blend is not None
                else {}
            ),
            "boosters": {
                p: {"params": s.params, "rounds": s.rounds, "validation_logloss": s.validation_logloss}
                for p, s in self.shapes.items()
            },
        }


async def train(
    store: FeatureStore,
    space: FeatureSpace,
    catalogue: Catalogue,
    models_dir: Path,
    config: TrainingConfig = TrainingConfig(),
    subjects: Sequence[str] | None = None,
    reference: ReferenceChances | None = None,
) -> dict[str, Any]:
    """Train, evaluate, write a new version and point LATEST at it; returns the version's meta. With
    ``reference`` the holdout ranks its chances too (``simulator_chances``)."""
    products = catalogue.ids
    clients = list(subjects) if subjects is not None else await list_subjects(store)
    # "now" is read once: every cut and the split below must agree on it to the second
    config = dataclasses.replace(config, end=config.end if config.end is not None else time.time())
    cuts = cut_times(config)
    clock = _PhaseClock()
    data = await _point_in_time_rows(store, space, catalogue, clients, cuts, config)
    clock.lap("point_in_time_rows")
    train_set, holdout = _split(data, min(holdout_times(config)), config.horizon_days)
    validation = _validate(train_set, products, space, catalogue, config)
    clock.lap("validation")
    fitted = _fit(train_set, products, space.names, validation.shapes)
    weights = validation.blend.weights if validation.blend is not None else catalogue.decision.weights
    metrics = _evaluate_holdout(holdout, products, space, catalogue, fitted, weights, config.k, reference)
    clock.lap("holdout")
    # The served models are the same recipe refitted on every labelled row, the holdout's included: the
    # evaluation judged it fitted on less, and the newest uptakes tell the most about the next ones.
    served = _fit(data, products, space.names, validation.shapes)
    serve_matrix, serve_clients = await _serving_interactions(store, products, subjects)
    clock.lap("served_models")
    meta = {
        "version": datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%f"),
        "created_at": time.time(),
        "features": space.names,
        "products": products,
        "xgboost_products": sorted(served.boosters),
        "popularity": served.popularity,
        "segment_popularity": served.segment_popularity,
        "blend": {"weights": validation.blend.weights} if validation.blend is not None else {},
        "metrics": metrics,
        "validation": validation.as_dict(),
        "training": {
            "cuts": cuts,
            "holdout_cuts": config.holdout_cuts,
            "horizon_days": config.horizon_days,
            "train_rows": len(train_set.clients),
            "holdout_rows": len(holdout.clients),
            "served_rows": len(data.clients),  # what the served models were refitted on
            "clients": len(clients),
            "seconds": clock.laps,  # where a training run's time goes, by phase
        },
    }
    _write_version(models_dir, meta, served, serve_matrix, serve_clients, holdout, fitted.boosters)
    return meta


class _PhaseClock:
    """Wall-clock seconds of each phase of a training run, in the order they ran."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._since = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.laps[phase] = round(now - self._since, 2)
        self._since = now


async def _point_in_time_rows(
    store: FeatureStore,
    space: FeatureSpace,
    catalogue: Catalogue,
    clients: list[str],
    cuts: list[float],
    config: TrainingConfig,
) -> Dataset:
    """The serving view of every client as of every cut, with the labels of the horizon after it."""
    with progress_bar(config.progress) as bar:
        task = bar.add_task("point-in-time features", total=len(clients) * len(cuts))
        return await build_dataset(
            store,
            space,
            catalogue,
            clients,
            cuts,
            config.horizon_days,
            progress=lambda n: bar.advance(task, n),
            concurrency=config.read_concurrency,
        )


def progress_bar(enabled: bool) -> Progress:
    """A bar with counts and the time elapsed, on stderr (stdout may carry a command's JSON), gone when done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=True,
        console=Console(stderr=True),
    )


def _split(data: Dataset, at: float, horizon_days: float) -> tuple[Dataset, Dataset]:
    """The rows from cut ``at`` on, and before them the rows whose label windows end by ``at`` (a time split:
    nothing learns from the future)."""
    slack = 1.0  # seconds: cut times are floats
    earlier = data.where(data.cut + horizon_days * DAY <= at + slack)
    at_cut = data.where(data.cut >= at - slack)
    if len(earlier.clients) == 0 or len(at_cut.clients) == 0:
        raise TrainingSetupError("not enough history to train: no rows before or at the holdout cut")
    return earlier, at_cut


def _validate(
    train_set: Dataset, products: list[str], space: FeatureSpace, catalogue: Catalogue, config: TrainingConfig
) -> Validation:
    """Booster shapes and blend weights chosen on the latest training cut, with models fitted on the cuts whose
    labels end before it."""
    try:
        fit_set, validation = _split(train_set, float(train_set.cut.max()), config.horizon_days)
    except TrainingSetupError:
        return Validation({}, None, 0)
    relevant = ((validation.labels > 0) & (validation.mask > 0)).any(axis=1).sum()
    if relevant < MIN_VALIDATION_CLIENTS:
        return Validation({}, None, len(validation.clients))
    boosters, shapes = choose_shapes(fit_set, validation, products, space.names)
    fitted = _fitted(fit_set, products, boosters)
    sources = _sources_by_cut(validation, products, space, catalogue, fitted)
    base = baselines.base_rate_matrix(validation, products, fitted.segment_popularity, fitted.popularity)
    learned = learn_weights(sources, base, validation.labels, validation.mask, config.k, np.array(validation.clients))
    return Validation(shapes, learned, len(validation.clients))


def _fitted(train_set: Dataset, products: list[str], boosters: dict[str, xgb.Booster]) -> FittedModels:
    mean, std = population_stats(_squash(train_set.features))
    return FittedModels(
        boosters,
        mean,
        std,
        baselines.popularity(train_set, products),
        baselines.segment_popularity(train_set, products),
        train_set,
    )


def _fit(train_set: Dataset, products: list[str], names: list[str], shapes: dict[str, BoosterShape]) -> FittedModels:
    return _fitted(train_set, products, fit_boosters(train_set, products, names, shapes))


def _sources_by_cut(
    rows: Dataset, products: list[str], space: FeatureSpace, catalogue: Catalogue, fitted: FittedModels
) -> dict[str, np.ndarray]:
    """Every scorer's matrix for ``rows``, each cut scored with the scorers as of that cut (ALS learns the
    clients' products then), so a product taken at a later cut is never an input at an earlier one."""
    sources: dict[str, np.ndarray] = {}
    for cut in np.unique(rows.cut):
        at_cut = rows.where(rows.cut == cut)
        for name, matrix in score_sources(
            at_cut, products, *_scorers(at_cut, products, space, catalogue, fitted)
        ).items():
            sources.setdefault(name, np.full((len(rows.clients), len(products)), np.nan))[rows.cut == cut] = matrix
    return sources


def _scorers(
    rows: Dataset, products: list[str], space: FeatureSpace, catalogue: Catalogue, fitted: FittedModels
) -> tuple[XGBoostScorer, ALSScorer | None, ExpertScorer]:
    """The scorers as the server would hold them for ``rows``: ALS learns the clients' products as of the
    rows' cut (nothing from after it)."""
    expert = ExpertScorer("eval", space, catalogue, fitted.mean, fitted.std, fitted.popularity)
    matrix, clients = interaction_matrix(_als_inputs(rows, products), products)
    als = None
    if matrix.nnz:
        client_f, product_f = train_als(matrix)
        als = ALSScorer(
            "eval",
            products,
            {c: i for i, c in enumerate(clients)},
            client_f,
            product_f,
            np.array([fitted.popularity[p] for p in products], dtype=np.float32),
        )
    return XGBoostScorer("eval", space, fitted.boosters), als, expert


def _evaluate_holdout(
    holdout: Dataset,
    products: list[str],
    space: FeatureSpace,
    catalogue: Catalogue,
    fitted: FittedModels,
    weights: dict[str, float],
    k: int,
    reference: ReferenceChances | None = None,
) -> dict[str, Any]:
    """Every scorer, the blend and the baselines on the holdout cuts (and the reference chances, if any)."""
    sources = _sources_by_cut(holdout, products, space, catalogue, fitted)
    references = {}
    if reference is not None:
        references["simulator_chances"] = np.array(
            [
                [reference(s.client_id, float(cut)).get(p, 0.0) for p in products]
                for s, cut in zip(holdout.snapshots, holdout.cut, strict=True)
            ],
            dtype=np.float64,
        ).reshape(len(holdout.snapshots), len(products))
    return evaluate_sources(
        holdout,
        products,
        sources,
        fitted.popularity,
        weights,
        k,
        segment_popularity=fitted.segment_popularity,
        logistic=baselines.logistic_scores(fitted.train_set, holdout, products),
        values={p.id: p.value for p in catalogue.products} if catalogue.decision.use_business_value else None,
        references=references,
    )


async def _serving_interactions(
    store: FeatureStore, products: list[str], subjects: Sequence[str] | None
) -> tuple[Any, list[str]]:
    """The served ALS learns from every client's current products (only ``subjects`` when given)."""
    serve_matrix, serve_clients = interaction_matrix(await interactions(store), products)
    if subjects is not None:
        wanted = set(subjects)
        keep = [i for i, c in enumerate(serve_clients) if c in wanted]
        serve_matrix, serve_clients = serve_matrix[keep], [serve_clients[i] for i in keep]
    return serve_matrix, serve_clients


def _write_version(
    models_dir: Path,
    meta: dict[str, Any],
    served: FittedModels,
    serve_matrix: Any,
    serve_clients: list[str],
    holdout: Dataset,
    evaluated_boosters: dict[str, xgb.Booster],
) -> None:
    """The version directory (the served models, statistics, meta, the report of the evaluated boosters on the
    holdout), then LATEST pointed at it atomically."""
    products, directory = meta["products"], models_dir / meta["version"]
    directory.mkdir(parents=True, exist_ok=True)
    for product, booster in served.boosters.items():
        booster.save_model(directory / f"xgb_{product}.ubj")
    if serve_matrix.nnz:
        client_factors, product_factors = train_als(serve_matrix)
        np.savez(
            directory / "als.npz",
            clients=np.array(serve_clients),
            products=np.array(products),
            client_factors=client_factors,
            product_factors=product_factors,
            popularity=np.array([served.popularity[p] for p in products], dtype=np.float32),
        )
    np.savez(directory / "expert_stats.npz", mean=served.mean, std=served.std)
    served_files = [p.name for p in directory.iterdir() if p.suffix in (".ubj", ".npz")]
    meta["artifacts"] = file_digests(directory, served_files)
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))  # last: it names every file to wait for
    from recommenders.report import write_report

    write_report(directory, meta, holdout, evaluated_boosters, meta["features"], products)
    write_atomically(models_dir / "LATEST", meta["version"].encode())  # servers never read half a name


async def train_configured(
    settings: TrainingSettings,
    config: TrainingConfig = TrainingConfig(),
    reference: ReferenceChances | None = None,
    read_from: Literal["master", "replica"] | None = None,
) -> dict[str, Any]:
    """`train` with everything taken from the settings: the store, the serving view, the catalogue and the
    models directory (what `rtrec train` and the demo run); ``read_from`` overrides where the store is read."""
    rec = settings.recommendations
    catalogue = load_catalogue(rec.catalogue)
    store_settings = settings.store if read_from is None else settings.store.model_copy(update={"read_from": read_from})
    ttl = TtlPolicy.from_settings(settings.ttl)
    space = model_space(settings.views[rec.view], catalogue)
    cut_short = windows_cut_short(space, config, ttl)
    if cut_short:
        log.warning(
            "the store's TTL is shorter than %s reach back at the earliest training cut: they are cut short in "
            "training (not in serving) once the history is older than the TTL; raise [ttl] or use fewer cuts",
            ", ".join(cut_short),
        )
    async with FeatureStore(store_settings, ttl=ttl) as store:
        return await train(
            store,
            space,
            catalogue,
            rec.models_dir,
            config,
            reference=reference,
        )
