"""A client as the recommenders see it: one aggregate call (the feature view plus product-status specs derived
from the catalogue) turned into facts (segment, age, tenure, held and applied-for products) and a numeric
vector with a fixed feature order shared by training and serving (point-in-time: everything is "as of now")."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from feature_store.specs import AggregateFn, AggregateSpec, parse_view
from recommenders.catalogue import Catalogue

DAY = 86400.0
# Raw view labels that are not model inputs as such (they become derived features below).
# Client facts come from the newest client data (``profile.*``), or, as of a cut before it, from the version
# kept in the client data history (``history.profile.*``): training rows before a profile change see the
# profile of then.
FACTS = ("segment", "birth_date", "registered_at")
PROFILE_FACTS = {f"last(profile.{fact})" for fact in FACTS}
HISTORY_FACTS = {f"last(history.profile.{fact})" for fact in FACTS}  # read by training; as of now, never needed
NON_NUMERIC = PROFILE_FACTS | HISTORY_FACTS
BEHAVIOUR = (
    "spend_to_income",
    "balance_to_income",
    "balance_trend",
    "spend_trend",
    "online_share",
    "travel_share",
    "balance_swing",
    "salary_recency",
    "inflow_spike",
    "balance_floor",
    "salary_growth",
)
HOLDS = "holds."  # the prefix of a held-product flag: holds.credit_card
DERIVED = (
    "age_years",
    "tenure_years",
    "segment_retail",
    "segment_sme",
    "segment_corporate",
    "month_sin",
    "month_cos",
    *BEHAVIOUR,
)


@functools.cache  # on every request: the labels are built once
def _label(fn: AggregateFn, feature: str, days: float = 0.0) -> str:
    return AggregateSpec(fn, feature, days * DAY).label


def _number(values: dict[str, object], label: str) -> float | None:
    value = values.get(label)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _instant(value: object) -> float | None:
    """A date fact in epoch seconds, or None (unknown) for anything else: ``true`` is not 1970, nor NaN a date;
    an unknown age refuses every product with an age limit."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or bottom is None or bottom <= 0 else top / bottom


def behaviour(values: dict[str, object]) -> dict[str, float | None]:
    """Ratios of view aggregates that say more than either part (uptake depends on spending and savings
    relative to income, on how steady the balance is and on whether the salary still comes, rather than on raw
    sums): None where a part is missing from the view or from the client. Monthly income is the average salary,
    or a third of 90 days' inflows without one."""
    n = functools.partial(_number, values)
    salary = n(_label("avg", "tx.in.salary", 365))
    inflow = n(_label("sum", "tx.in.amount", 90))
    income = salary if salary else (inflow / 3 if inflow else None)
    spend_90d = n(_label("sum", "tx.out.amount", 90))
    return {
        "spend_to_income": _ratio(n(_label("sum", "tx.out.amount", 30)), income),
        "balance_to_income": _ratio(n(_label("avg", "balance", 90)), income),
        "balance_trend": _ratio(n(_label("last", "balance")), n(_label("avg", "balance", 90))),
        "spend_trend": _ratio(n(_label("sum", "tx.out.amount", 30)), spend_90d / 3 if spend_90d else None),
        "online_share": _ratio(n(_label("sum", "tx.out.channel.online", 90)), spend_90d),
        "travel_share": _ratio(n(_label("sum", "tx.out.mcc.travel", 365)), n(_label("sum", "tx.out.amount", 365))),
        # how far the balance moves (the view has no spread aggregate): recent peak minus half-year low
        "balance_swing": _ratio(_difference(n(_label("max", "balance", 30)), n(_label("min", "balance", 180))), income),
        # salary still arriving: payments in the last 30 days against the 90-day monthly rate (0 when it stopped)
        "salary_recency": _ratio(
            n(_label("count", "tx.in.salary", 30)), _third(n(_label("count", "tx.in.salary", 90)))
        ),
        # life events: a one-off large inflow (bonus, a sale), a month short of money, a salary raise
        "inflow_spike": _ratio(n(_label("max", "tx.in.amount", 30)), income),
        "balance_floor": _ratio(n(_label("min", "balance", 30)), income),
        "salary_growth": _ratio(n(_label("avg", "tx.in.salary", 30)), salary),
    }


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _third(value: float | None) -> float | None:
    return value / 3 if value else None


def status_specs(catalogue: Catalogue) -> list[AggregateSpec]:
    """Per product: last opening and closing time and how many of each (``holds``), and applications within
    the blocking period."""
    block = catalogue.decision.applied_block_days * DAY
    specs: list[AggregateSpec] = []
    for product in catalogue.ids:
        specs += [
            AggregateSpec("last", f"product.{product}.opened"),
            AggregateSpec("last", f"product.{product}.closed"),
            AggregateSpec("count", f"product.{product}.opened"),
            AggregateSpec("count", f"product.{product}.closed"),
            AggregateSpec("count", f"app.{product}.submitted", block),
            AggregateSpec("count", f"app.{product}.approved", block),
        ]
    return specs


@dataclass(frozen=True)
class FeatureSpace:
    """The model inputs: numeric view aggregates plus derived client facts, in a fixed order."""

    view: list[AggregateSpec]
    products: tuple[str, ...] = ()  # a flag per product the client holds (cross-selling)
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        numeric = [s.label for s in self.view if s.label not in NON_NUMERIC]
        object.__setattr__(self, "names", [*numeric, *DERIVED, *(f"{HOLDS}{p}" for p in self.products)])

    @classmethod
    def from_view(cls, specs: list[str]) -> FeatureSpace:
        return cls(parse_view(specs))


@dataclass
class ClientSnapshot:
    client_id: str
    now: float
    values: dict[str, object]
    segment: str | None
    age_years: float | None
    tenure_days: float | None
    held: set[str]
    applied: set[str]

    @property
    def known(self) -> bool:
        """False for a client the store knows nothing about (cold start)."""
        return any(v not in (None, 0) for v in self.values.values()) or self.segment is not None

    def vector(self, space: FeatureSpace) -> np.ndarray:
        month = datetime.fromtimestamp(self.now, UTC).month
        derived = {
            "age_years": self.age_years,
            "tenure_years": None if self.tenure_days is None else self.tenure_days / 365.25,
            # an unknown segment is missing, not "none of the three"
            "segment_retail": None if self.segment is None else float(self.segment == "retail"),
            "segment_sme": None if self.segment is None else float(self.segment == "sme"),
            "segment_corporate": None if self.segment is None else float(self.segment == "corporate"),
            "month_sin": math.sin(2 * math.pi * month / 12),
            "month_cos": math.cos(2 * math.pi * month / 12),
            **behaviour(self.values),
            **{f"{HOLDS}{p}": float(p in self.held) for p in space.products},
        }
        row = []
        for name in space.names:
            value = derived[name] if name in derived else self.values.get(name)
            row.append(float(value) if isinstance(value, int | float) and not isinstance(value, bool) else np.nan)
        return np.asarray(row, dtype=np.float32)


def model_space(view: list[str], catalogue: Catalogue) -> FeatureSpace:
    """The space every model is trained and served on: the view, the derived facts, and a flag per catalogue
    product the client holds (what a client holds says much about what they take next: a card holder's loan,
    a depositor's brokerage account). Training and serving must both build it here, or the registry refuses
    the models as trained on other features."""
    return FeatureSpace(parse_view(view), tuple(catalogue.ids))


def all_specs(space: FeatureSpace, catalogue: Catalogue) -> list[AggregateSpec]:
    return [*space.view, *status_specs(catalogue)]


def features_read(space: FeatureSpace, catalogue: Catalogue) -> frozenset[str]:
    """Every feature name a snapshot aggregates: a store loaded only to train and judge models needs no other
    (training's labels read products and applications, which a snapshot reads too)."""
    return frozenset(spec.feature for spec in all_specs(space, catalogue))


def snapshot_from(
    client_id: str,
    now: float,
    space: FeatureSpace,
    catalogue: Catalogue,
    values: Sequence[object],
    specs: Sequence[AggregateSpec] | None = None,
) -> ClientSnapshot:
    """Build the snapshot from the values of ``all_specs`` (same order; pass that list when you have it)."""
    specs = specs if specs is not None else all_specs(space, catalogue)
    by_label = {spec.label: value for spec, value in zip(specs, values, strict=True)}
    view_values = {s.label: by_label.get(s.label) for s in space.view}  # serving leaves out the HISTORY_FACTS
    # The newest version is visible when its segment is (every client event carries one); then a fact it left
    # out stays out. Before it (a training cut), the version of then comes from the history.
    facts = "profile." if by_label.get("last(profile.segment)") is not None else "history.profile."
    birth, segment, registered = (
        by_label.get(f"last({facts}{fact})") for fact in ("birth_date", "segment", "registered_at")
    )
    held: set[str] = set()
    applied: set[str] = set()
    block = _window(catalogue.decision.applied_block_days)
    for product in catalogue.ids:
        opened, closed = f"product.{product}.opened", f"product.{product}.closed"
        last_opened, last_closed = by_label.get(f"last({opened})"), by_label.get(f"last({closed})")
        if holds(last_opened, last_closed, by_label.get(f"count({opened})"), by_label.get(f"count({closed})")):
            held.add(product)
        if by_label.get(f"count(app.{product}.submitted,{block})") or by_label.get(
            f"count(app.{product}.approved,{block})"
        ):
            applied.add(product)
    return ClientSnapshot(
        client_id=client_id,
        now=now,
        values=view_values,
        segment=segment if isinstance(segment, str) else None,
        age_years=None if (born := _instant(birth)) is None else (now - born) / (365.25 * DAY),
        tenure_days=None if (since := _instant(registered)) is None else (now - since) / DAY,
        held=held,
        applied=applied,
    )


def holds(last_opened: object, last_closed: object, openings: object, closings: object) -> bool:
    """Whether a product is held, from its opening and closing rows. A product event need not name its account,
    so one account's closing may follow another's opening: a card reissued (the new one opened, then the old one
    closed) or a deposit rolled over. Held when there are more openings than closings, or when the last opening
    is no earlier than the last closing (a closing whose opening predates the store's data; a tie, an opening
    and a closing in the same second, is held: never offer what may be held). Before the counts, the last
    closing alone decided, and a client with a reissued card was offered the card he holds."""
    if not isinstance(last_opened, int | float):
        return False
    if isinstance(openings, int) and isinstance(closings, int) and openings > closings:
        return True
    return not isinstance(last_closed, int | float) or last_closed <= last_opened


def _window(days: float) -> str:
    return AggregateSpec("count", "x", days * DAY).label.split(",")[1].rstrip(")")


def status_snapshot(
    client_id: str, now: float, catalogue: Catalogue, values: Sequence[object], specs: Sequence[AggregateSpec]
) -> ClientSnapshot:
    """A snapshot from profile facts and product status only (the manager's fast path): enough for the
    "no fails" filter and eligibility, no model inputs."""
    return snapshot_from(client_id, now, FeatureSpace([]), catalogue, values, specs)
