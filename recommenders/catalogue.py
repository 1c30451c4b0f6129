"""The product catalogue, decision settings and manual rules, loaded from configuration (deploy/products.toml)."""

from __future__ import annotations

import hashlib
import logging
import time
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

DEFAULT_CATALOGUE = Path("deploy/products.toml")
SEGMENTS = ("retail", "sme", "corporate")
# A catalogue file changed this recently may still be being written (an editor saving, a copy mid-way): a prefix
# cut at a line boundary is valid TOML that lacks the rest (the last products, the rules) and would be served as
# the whole. A change is read once the file has been left alone this long (the watcher looks every 2 s).
SETTLE_S = 1.0
MAX_LIMIT = 50  # the most products an answer may list (the API's `limit` bound)
# a blend weight, a business value or a rule's factor: a number NaN or infinity would turn into a null score
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Eligibility(BaseModel):
    min_age: float | None = None
    max_age: float | None = None
    segments: list[str] = Field(default_factory=lambda: ["retail", "sme", "corporate"])
    min_tenure_days: float | None = None

    def refusal(self, segment: str | None, age_years: float | None, tenure_days: float | None) -> str | None:
        """Why the client cannot get the product, or None when eligible. A rule that needs a fact the store
        does not have refuses (fail closed): a client of unknown age is never offered a product with an age
        limit, one of unknown segment only products open to every segment."""
        if segment is None and not set(SEGMENTS) <= set(self.segments):
            return "segment unknown"
        if segment is not None and segment not in self.segments:
            return f"segment {segment} not served"
        if (self.min_age is not None or self.max_age is not None) and age_years is None:
            return "age unknown"
        if age_years is not None and self.min_age is not None and age_years < self.min_age:
            return f"younger than {self.min_age:g}"
        if age_years is not None and self.max_age is not None and age_years > self.max_age:
            return f"older than {self.max_age:g}"
        if self.min_tenure_days is not None and tenure_days is None:
            return "time with the bank unknown"
        if tenure_days is not None and self.min_tenure_days is not None and tenure_days < self.min_tenure_days:
            return f"client for less than {self.min_tenure_days:g} days"
        return None


class Product(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    value: Weight = 1.0
    # Required: a product open to everyone says `eligibility = {}`. A product without the line is more likely a
    # file cut short (being written, a bad merge) than a choice, and "everyone" is the one guess never to make.
    eligibility: Eligibility
    # how much each axis matters, over 0: the expert takes the weighted mean (weights of zero sum, or of mixed
    # signs adding to nearly nothing, divided by zero or overflowed, and the expert failed every request)
    portrait: dict[str, Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]] = Field(default_factory=dict)


class Rule(BaseModel):
    name: str
    product: str
    action: Literal["force", "boost", "suppress"]
    factor: Weight = 1.0
    segments: list[str] = Field(default_factory=list)
    clients: list[str] = Field(default_factory=list)
    # A rule targets nobody unless it names clients or segments, or says everyone: an empty watch list must
    # not hide a product from every client.
    everyone: bool = False

    def applies_to(self, client_id: str, segment: str | None) -> bool:
        return self.everyone or client_id in self.clients or (segment is not None and segment in self.segments)


# The manager answers on its fast path (no models) when less than 0.15 s of the budget is left, keeping 0.03 s
# for the decision (manager/recommend.py): a smaller budget put every request on it, degraded and uncached.
MIN_BUDGET_S = 0.25


class Decision(BaseModel):
    """Bounded: a file that parses but says ``applied_block_days = 0`` or ``budget_s = -1`` is refused (the last
    good catalogue stays), where it made every request fail or take the fast path."""

    model_config = ConfigDict(allow_inf_nan=False)

    applied_block_days: float = Field(default=180.0, ge=1)
    cache_ttl_s: float = Field(default=300.0, ge=0)
    budget_s: float = Field(default=0.5, ge=MIN_BUDGET_S, le=10)
    default_limit: int = Field(default=3, ge=1, le=MAX_LIMIT)
    # The blend's weights when the served models bring none (trained before weights were learned, or
    # learned_weights = false); keys xgboost, als, expert and base_rate (the client's segment's uptake rate).
    weights: dict[str, Weight] = Field(default_factory=lambda: {"xgboost": 0.8, "als": 0.1, "expert": 0.1})
    learned_weights: bool = True  # use the weights training learned on its validation cut (meta.json "blend")
    use_business_value: bool = True


class Catalogue(BaseModel):
    products: list[Product] = Field(min_length=1)
    decision: Decision = Field(default_factory=Decision)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        ids = [p.id for p in self.products]
        if len(set(ids)) != len(ids):
            raise ValueError("product ids must be unique")
        unknown = sorted({r.product for r in self.rules} - set(ids))
        if unknown:
            raise ValueError(f"rules name products the catalogue lacks: {', '.join(unknown)}")
        return self

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.products]

    def fingerprint(self) -> str:
        """A short hash of everything in the catalogue (products, eligibility, rules, decision settings): a
        cached answer made under another catalogue must not be served (about 15 microseconds)."""
        return hashlib.blake2b(self.model_dump_json().encode(), digest_size=8).hexdigest()

    def product(self, product_id: str) -> Product:
        for p in self.products:
            if p.id == product_id:
                return p
        raise KeyError(product_id)


def load_catalogue(path: Path | str = DEFAULT_CATALOGUE) -> Catalogue:
    with open(path, "rb") as handle:
        return Catalogue.model_validate(tomllib.load(handle))


class CatalogueFile:
    """The catalogue as a callable that reloads its file when it changes (no release, no restart).
    A file that fails to parse keeps the last good catalogue."""

    def __init__(self, path: Path | str = DEFAULT_CATALOGUE) -> None:
        self.path = Path(path)
        self._mtime = self.path.stat().st_mtime
        self.current = load_catalogue(self.path)

    def __call__(self) -> Catalogue:
        return self.current

    def reload_if_changed(self, now: float | None = None) -> bool:
        """Load the file if it changed and has settled (``SETTLE_S``); ``now``: the wall clock, for tests."""
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return False
            if (time.time() if now is None else now) - mtime < SETTLE_S:
                return False  # maybe still being written: looked at again in the next round
            try:
                loaded = load_catalogue(self.path)
            finally:
                # written to while it was read: the next round reads it again; otherwise a version is read
                # once (a refused one is logged once, then waits for the next change)
                settled = self.path.stat().st_mtime == mtime
                self._mtime = mtime if settled else self._mtime
            if not settled:
                return False
            self.current = loaded
            return True
        except (OSError, ValueError) as exc:
            log.error("catalogue %s refused, the last good one stays: %s", self.path, exc)
            return False
