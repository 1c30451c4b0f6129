"""Collaborative scorer: implicit ALS on the client x product interaction matrix (held = 1.0, applied = 0.5).

Serving is a dot product of the client's factors with each product's factors (ALS approximates the 0/1
preference, clipped to 0..1); like every scorer it answers on the scale of uptake probability, the product's
base rate scaled by 0.5..1.5 with that preference. A client the model has not seen is folded in from their own
interactions (one small least-squares solve with the fixed product factors); a client with no interactions
at all gets the products' popularity, a sensible cold-start answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix

from recommenders.arrays import check_array
from recommenders.profile import ClientSnapshot
from recommenders.scorer import ProductScore

HELD_WEIGHT = 1.0
APPLIED_WEIGHT = 0.5
REGULARIZATION = 0.05


def interaction_matrix(
    rows: Iterable[tuple[str, str, str]],
    products: Sequence[str],
) -> tuple[csr_matrix, list[str]]:
    """(subject, product, kind) rows -> a clients x products matrix and the client order."""
    column = {p: i for i, p in enumerate(products)}
    clients: dict[str, int] = {}
    cells: dict[tuple[int, int], float] = {}
    for subject, product, kind in rows:
        if product not in column:
            continue
        r = clients.setdefault(subject, len(clients))
        weight = HELD_WEIGHT if kind == "held" else APPLIED_WEIGHT
        cells[(r, column[product])] = max(cells.get((r, column[product]), 0.0), weight)
    keys = list(cells)
    matrix = csr_matrix(
        (list(cells.values()), ([k[0] for k in keys], [k[1] for k in keys])),
        shape=(len(clients), len(products)),
        dtype=np.float32,
    )
    return matrix, list(clients)


def train_als(
    matrix: csr_matrix, factors: int = 16, iterations: int = 20, seed: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (client factors, product factors). BLAS runs single-threaded during the fit, as implicit
    advises: its own threads plus BLAS threads oversubscribe the cores."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            iterations=iterations,
            regularization=REGULARIZATION,
            alpha=20.0,
            random_state=seed,
            num_threads=1,
        )
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


class ALSScorer:
    name = "als"

    def __init__(
        self,
        version: str,
        products: Sequence[str],
        client_index: dict[str, int],
        client_factors: np.ndarray,
        product_factors: np.ndarray,
        popularity: np.ndarray,
    ) -> None:
        self.version = version
        self.products = list(products)
        self.column = {p: i for i, p in enumerate(self.products)}
        self.client_index = client_index
        self.client_factors = client_factors
        self.product_factors = product_factors
        self.popularity = popularity
        gram = product_factors.T @ product_factors
        self._solve = np.linalg.inv(gram + REGULARIZATION * np.eye(gram.shape[0]))

    @classmethod
    def load(cls, path: Path, version: str) -> ALSScorer:
        data = np.load(path, allow_pickle=False)
        clients = [str(c) for c in data["clients"]]
        products = data["products"]
        check_array(data["client_factors"], (len(clients), None), "client_factors")
        check_array(data["product_factors"], (len(products), data["client_factors"].shape[1]), "product_factors")
        check_array(data["popularity"], (len(products),), "popularity")
        return cls(
            version,
            [str(p) for p in data["products"]],
            {c: i for i, c in enumerate(clients)},
            data["client_factors"],
            data["product_factors"],
            data["popularity"],
        )

    def client_vector(self, client: ClientSnapshot) -> np.ndarray | None:
        row = self.client_index.get(client.client_id)
        if row is not None:
            return self.client_factors[row]  # type: ignore[no-any-return]
        observed = [self.column[p] for p in client.held | client.applied if p in self.column]
        if not observed:
            return None
        # fold-in: least squares of the client's 0/1 preferences on the fixed product factors
        preference = np.zeros(len(self.products), dtype=np.float32)
        preference[observed] = 1.0
        return self._solve @ (self.product_factors.T @ preference)  # type: ignore[no-any-return]

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        return self.score_vector(self.client_vector(client), products)

    def score_vector(self, vector: np.ndarray | None, products: Sequence[str]) -> dict[str, ProductScore]:
        out = {}
        for product in products:
            column = self.column.get(product)
            if column is None:
                continue
            base = float(self.popularity[column])
            if vector is None:
                out[product] = ProductScore(product, base, ("popular with clients",))
            else:
                preference = float(np.clip(vector @ self.product_factors[column], 0.0, 1.0))
                out[product] = ProductScore(
                    product, min(1.0, base * (0.5 + preference)), ("clients with similar products chose it",)
                )
        return out
