"""The scorer interface: every recommender (XGBoost per product, ALS, expert portraits, remote scorers)
answers the same question for one client and a set of products."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from recommenders.profile import ClientSnapshot


@dataclass(frozen=True, slots=True)
class ProductScore:
    product: str
    score: float  # 0..1, comparable across products of one scorer
    reasons: tuple[str, ...] = field(default=())


class Scorer(Protocol):
    name: str
    version: str

    async def score(self, client: ClientSnapshot, products: Sequence[str]) -> dict[str, ProductScore]:
        """Scores of ``products`` for ``client``; may omit products it cannot score."""
        ...
