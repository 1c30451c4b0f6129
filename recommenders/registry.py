"""Versioned model artifacts and hot reload.

``artifacts/models/<version>/`` holds the per-product XGBoost models, the ALS factors, the expert's population
statistics, product popularity and ``meta.json`` (metrics, feature list). ``artifacts/models/LATEST`` names the
version to serve; the registry polls it and swaps the loaded models in place without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recommenders.als import ALSScorer
from recommenders.arrays import check_array
from recommenders.catalogue import Catalogue, CatalogueFile
from recommenders.expert import ExpertScorer
from recommenders.profile import FeatureSpace
from recommenders.xgb import XGBoostScorer

log = logging.getLogger(__name__)

NO_MODEL = "untrained"


@dataclass
class LoadedModels:
    version: str
    xgboost: XGBoostScorer | None
    als: ALSScorer | None
    expert: ExpertScorer
    popularity: dict[str, float]
    meta: dict[str, object] = field(default_factory=dict)
    segment_popularity: dict[str, dict[str, float]] = field(default_factory=dict)
    blend_weights: dict[str, float] | None = None  # learned on the validation cut; None: the catalogue's

    def base_rates(self, segment: str | None) -> dict[str, float]:
        """Each product's uptake rate in training among clients of the segment (all clients when the segment
        is unknown or was not seen): the blend's fallback for a product a scorer did not score."""
        return self.segment_popularity.get(segment or "", self.popularity)

    def versions(self) -> dict[str, str]:
        out = {"expert": self.expert.version}
        if self.xgboost is not None:
            out["xgboost"] = self.xgboost.version
        if self.als is not None:
            out["als"] = self.als.version
        return out


def latest_version(models_dir: Path) -> str | None:
    """The version ``LATEST`` names; None when there is none yet. Raises OSError or UnicodeDecodeError for a
    pointer that cannot be read (a directory, no permission, bytes that are not text)."""
    try:
        return (models_dir / "LATEST").read_text().strip() or None
    except FileNotFoundError:
        return None


def _files_signature(directory: Path) -> tuple[tuple[str, int, int], ...] | None:
    """Names, sizes and change times of a version's files: a refused version is tried again once they change
    (a copy of the models directory may bring LATEST before the version it names)."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()))
    except OSError:
        return None


def file_digests(directory: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 of each named file of a version: ``meta.json`` lists them (``artifacts``) when training writes
    it, last, so a server loads a version only once every file it names is there, whole and unchanged."""
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in sorted(names)}


def _check_artifacts(directory: Path, meta: dict[str, object]) -> None:
    """ValueError unless every file ``meta.json`` lists is there with its digest. A copy of the models
    directory brings files in any order: a version whose ``als.npz`` had not arrived loaded without ALS and
    stayed so; a half-copied booster failed to parse. Versions trained before the list existed have none."""
    listed = meta.get("artifacts")
    if listed is None:
        return
    if not isinstance(listed, dict) or not all(isinstance(d, str) for d in listed.values()):
        raise ValueError("artifacts must map file names to SHA-256 digests")
    names = [str(name) for name in listed]
    if any(Path(name).name != name for name in names):
        raise ValueError("artifacts must name files of the version's own directory")
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise ValueError(f"incomplete: {', '.join(missing)} not there yet")
    changed = [name for name, digest in file_digests(directory, names).items() if digest != listed[name]]
    if changed:
        raise ValueError(f"incomplete or damaged: {', '.join(changed)} differ from meta.json's digests")


def load_version(models_dir: Path, version: str, space: FeatureSpace, catalogue: Catalogue) -> LoadedModels:
    directory = models_dir / version
    meta = json.loads((directory / "meta.json").read_text())
    if not isinstance(meta, dict):
        raise ValueError("meta.json must be an object")
    _check_artifacts(directory, meta)
    if meta["features"] != space.names:
        raise ValueError(
            f"model {version} was trained on other features than the configured view and catalogue products "
            "(run `rtrec train` after changing either)"
        )
    stats = np.load(directory / "expert_stats.npz")
    for name in ("mean", "std"):  # one finite number per feature
        check_array(stats[name], (len(space.names),), f"expert_stats {name}")
    popularity = _numbers(meta.get("popularity", {}), "popularity")
    als_path = directory / "als.npz"
    return LoadedModels(
        version=version,
        xgboost=XGBoostScorer.load(
            directory, version, space, catalogue.ids, stats["mean"], _names(meta.get("xgboost_products"))
        ),
        als=ALSScorer.load(als_path, version) if als_path.exists() else None,
        expert=ExpertScorer(version, space, catalogue, stats["mean"], stats["std"], popularity),
        popularity=popularity,
        meta=meta,
        segment_popularity=_rates_by_segment(meta.get("segment_popularity", {})),
        blend_weights=_weights(meta.get("blend", {})),
    )


def _names(raw: object) -> list[str] | None:
    """``meta.json`` product list (None when an older version has none), checked like the rates."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise ValueError("xgboost_products must be a list of product names")
    return raw


def _rates_by_segment(raw: object) -> dict[str, dict[str, float]]:
    """``meta.json`` segment -> product -> rate, checked: a malformed file is refused (ValueError), never
    half-served."""
    if not isinstance(raw, dict):
        raise ValueError("segment_popularity must map segments to product rates")
    return {str(segment): _numbers(rates, "segment rates") for segment, rates in raw.items()}


def _weights(raw: object) -> dict[str, float] | None:
    """``meta.json`` blend -> the learned weights (None when the version has none), checked like the rates."""
    if not isinstance(raw, dict):
        raise ValueError("blend must be an object")
    weights = raw.get("weights")
    if weights == {}:
        raise ValueError("blend weights must not be empty")
    return None if weights is None else _numbers(weights, "blend weights")


def _numbers(raw: object, what: str) -> dict[str, float]:
    """A name -> non-negative number map from ``meta.json``, or ValueError."""
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must map names to numbers")
    return {str(name): _number(value) for name, value in raw.items()}


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ValueError(f"not a rate or weight: {value!r}")
    return float(value)


def untrained(space: FeatureSpace, catalogue: Catalogue) -> LoadedModels:
    """Before any training: expert portraits with default statistics, uniform popularity."""
    return LoadedModels(NO_MODEL, None, None, ExpertScorer(NO_MODEL, space, catalogue), {p: 0.1 for p in catalogue.ids})


class ModelRegistry:
    def __init__(self, models_dir: Path, space: FeatureSpace, catalogue: Catalogue) -> None:
        self.models_dir = models_dir
        self.space = space
        self.catalogue = catalogue
        self.current = untrained(space, catalogue)
        self.refused: str | None = None  # the last version that could not be loaded
        self._refused_files: tuple[tuple[str, int, int], ...] | None = None  # its files when it was refused
        self._unreadable_pointer: str | None = None  # why LATEST could not be read, logged once

    def reload_if_changed(self) -> bool:
        try:
            version = latest_version(self.models_dir)
        except (OSError, UnicodeDecodeError) as exc:  # the served version stays; the watcher goes on
            reason = f"{type(exc).__name__}: {exc}"
            if reason != self._unreadable_pointer:
                log.error("cannot read %s: %s (keeping %s)", self.models_dir / "LATEST", reason, self.current.version)
            self._unreadable_pointer = reason
            return False
        self._unreadable_pointer = None
        if version is None or version == self.current.version:
            return False
        files = _files_signature(self.models_dir / version)
        if version == self.refused and files == self._refused_files:
            return False
        try:
            loaded = load_version(self.models_dir, version, self.space, self.catalogue)
        except Exception as exc:  # whatever a bad version raises (a truncated .npz: BadZipFile), it is refused
            # logged once; tried again when its files change, or a newer LATEST is tried
            self.refused, self._refused_files = version, files
            log.error(
                "cannot load model version %s: %s: %s (keeping %s)",
                version,
                type(exc).__name__,
                exc,
                self.current.version,
            )
            return False
        # one reference swap: a request takes `current` once and keeps that version to its end
        self.current = loaded
        log.info("serving model version %s", version)
        return True

    def served_space(self) -> FeatureSpace:
        """The features of the version served now (``space`` is the one new versions must have): what a remote
        scorer is sent, so it scores the same version's features as the manager."""
        return self.current.expert.space

    def set_catalogue(self, catalogue: Catalogue) -> None:
        """A changed catalogue (new product, changed portrait) takes effect for the expert at once. Versions
        loaded from now on are checked against the space of the new products (a flag per product held): the
        models `rtrec train` makes after the change. The served version keeps the space it was trained on."""
        self.catalogue = catalogue
        self.current.expert.catalogue = catalogue
        space = FeatureSpace(self.space.view, tuple(catalogue.ids))
        if space.names != self.space.names:
            self.space = space
            self.refused, self._refused_files = None, None  # refused for the old products: try it again

    async def watch(self, interval_s: float = 2.0, catalogue_file: CatalogueFile | None = None) -> None:
        """Reload a new model version or catalogue every ``interval_s``. A round that fails is logged and the next
        one runs: a watcher that died would leave the API serving old models and rules without a word."""
        while True:
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:
                log.exception("model reload failed (tried again in %.0f s)", interval_s)
            try:  # on its own: a model that cannot be read must not hold back a catalogue's urgent rule
                if catalogue_file is not None and catalogue_file.reload_if_changed():
                    self.set_catalogue(catalogue_file())
                    log.info("catalogue reloaded from %s", catalogue_file.path)
            except Exception:
                log.exception("catalogue reload failed (tried again in %.0f s)", interval_s)
            await asyncio.sleep(interval_s)
