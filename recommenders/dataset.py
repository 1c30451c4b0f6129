"""Point-in-time training rows from the feature store.

For a client and a cut time t: the features are the serving view aggregated *as of t* (the store only counts
features with time_use <= t), and the label of a product is 1 when the client applied for or opened it in
(t, t + horizon]. Products the client already held, had applied for, or was not eligible for at t are masked
out: the manager would never recommend them, so models neither learn from nor are scored on them. Client
facts (segment, age, tenure) are as of t too: the newest client data where it is older than t, otherwise the
version kept in the client data history (``history.*``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from feature_store.client import FeatureStore
from feature_store.records import Value
from feature_store.specs import AggregateSpec
from recommenders.catalogue import Catalogue
from recommenders.decision import open_products
from recommenders.profile import ClientSnapshot, FeatureSpace, all_specs, snapshot_from

DAY = 86400.0
CONCURRENCY = 16


@dataclass
class Dataset:
    features: np.ndarray  # rows x features
    labels: np.ndarray  # rows x products (0/1)
    mask: np.ndarray  # rows x products: 1 where the product could be recommended at the cut
    cut: np.ndarray  # row -> cut time
    clients: list[str]
    snapshots: list[ClientSnapshot]

    def where(self, selector: np.ndarray) -> Dataset:
        idx = np.flatnonzero(selector)
        return Dataset(
            self.features[idx],
            self.labels[idx],
            self.mask[idx],
            self.cut[idx],
            [self.clients[i] for i in idx],
            [self.snapshots[i] for i in idx],
        )


def label_specs(catalogue: Catalogue, horizon_s: float) -> list[AggregateSpec]:
    specs = []
    for product in catalogue.ids:
        specs += [
            AggregateSpec("count", f"app.{product}.submitted", horizon_s),
            AggregateSpec("count", f"product.{product}.opened", horizon_s),
        ]
    return specs


async def build_dataset(
    store: FeatureStore,
    space: FeatureSpace,
    catalogue: Catalogue,
    subjects: Sequence[str],
    cuts: Sequence[float],
    horizon_days: float,
    progress: Callable[[int], None] | None = None,
    concurrency: int = CONCURRENCY,
) -> Dataset:
    """Every client's rows at every cut, ``concurrency`` clients read at a time."""
    specs = all_specs(space, catalogue)
    horizon_s = horizon_days * DAY
    labels_spec = label_specs(catalogue, horizon_s)
    products = catalogue.ids
    semaphore = asyncio.Semaphore(concurrency)

    def row(
        subject: str, cut: float, values: list[Value | None], future: list[Value | None]
    ) -> tuple[ClientSnapshot, np.ndarray, np.ndarray]:
        snapshot = snapshot_from(subject, cut, space, catalogue, values)
        label = np.array(
            [float(bool(future[2 * i]) or bool(future[2 * i + 1])) for i in range(len(products))], dtype=np.float32
        )
        verdicts = open_products(snapshot, catalogue)
        mask = np.array([float(verdicts[p] is None) for p in products], dtype=np.float32)
        return snapshot, label, mask

    label_times = [cut + horizon_s for cut in cuts]

    async def client_rows(subject: str) -> list[tuple[ClientSnapshot, np.ndarray, np.ndarray]]:
        """A client at every cut: two store calls, each one scan of the client's rows (features as of the
        cuts, labels as of the horizon after them)."""
        async with semaphore:
            values = await store.aggregate_at(subject, specs, cuts)
            future = await store.aggregate_at(subject, labels_spec, label_times)
        if progress is not None:
            progress(len(cuts))
        return [row(subject, cut, v, f) for cut, v, f in zip(cuts, values, future, strict=True)]

    by_client = await asyncio.gather(*(client_rows(s) for s in subjects))
    # cut-major order, as before: every client at the first cut, then every client at the next
    rows = [by_client[j][i] for i in range(len(cuts)) for j in range(len(subjects))]
    rows = [r for r in rows if r[0].known]
    snapshots = [r[0] for r in rows]
    return Dataset(
        features=np.vstack([s.vector(space) for s in snapshots]) if rows else np.zeros((0, len(space.names))),
        labels=np.vstack([r[1] for r in rows]) if rows else np.zeros((0, len(products))),
        mask=np.vstack([r[2] for r in rows]) if rows else np.zeros((0, len(products))),
        cut=np.array([s.now for s in snapshots]),
        clients=[s.client_id for s in snapshots],
        snapshots=snapshots,
    )
