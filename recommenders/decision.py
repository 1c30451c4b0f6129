"""The final decision block (pure): drop held, applied-for and ineligible products, blend the scorers that
answered, weigh by business value, apply manual rules, rank, and keep readable reasons.

Fallback order when main scorers are missing: the blend uses whatever of xgboost / als answered (with the
expert); with neither of them, the expert alone; with no scorer at all, product popularity. So an answer
always comes, and ``sources`` says which scorers stood behind each item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recommenders.catalogue import Catalogue
from recommenders.profile import ClientSnapshot
from recommenders.scorer import ProductScore

MAIN_SCORERS = ("xgboost", "als")
REASON_ORDER = ("xgboost", "expert", "als")
MAX_REASONS = 3


@dataclass
class Item:
    product: str
    score: float
    sources: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "product": self.product,
            "score": round(self.score, 6),
            "sources": self.sources,
            "reasons": self.reasons,
        }


def allowed_products(client: ClientSnapshot, catalogue: Catalogue) -> dict[str, str | None]:
    """product -> None if it may be recommended, else why not (held, applied for, ineligible, suppressed)."""
    suppressed = {
        r.product: r.name
        for r in catalogue.rules
        if r.action == "suppress" and r.applies_to(client.client_id, client.segment)
    }
    return {
        product: f"suppressed by rule {suppressed[product]}" if why is None and product in suppressed else why
        for product, why in open_products(client, catalogue).items()
    }


def open_products(client: ClientSnapshot, catalogue: Catalogue) -> dict[str, str | None]:
    """product -> None if the client could take it up (not held, not applied for, eligible), else why not.
    Training learns and evaluates among these: manual suppressions are the bank's choice, not the client's."""
    verdicts: dict[str, str | None] = {}
    for product in catalogue.products:
        if product.id in client.held:
            verdicts[product.id] = "already held"
        elif product.id in client.applied:
            verdicts[product.id] = "already applied for"
        else:
            verdicts[product.id] = product.eligibility.refusal(client.segment, client.age_years, client.tenure_days)
    return verdicts


def decide(
    client: ClientSnapshot,
    catalogue: Catalogue,
    results: dict[str, dict[str, ProductScore]],
    popularity: dict[str, float],
    limit: int,
    weights: dict[str, float] | None = None,
) -> list[Item]:
    """The ranked answer. ``weights``: the blend weights learned with the served models; without them, the
    catalogue's."""
    candidates = [p for p, why in allowed_products(client, catalogue).items() if why is None]
    items = [
        Item(
            product,
            score * (catalogue.product(product).value if catalogue.decision.use_business_value else 1.0),
            sources,
            _reasons(product, results),
        )
        for product, (score, sources) in blend(
            candidates, results, weights or catalogue.decision.weights, popularity
        ).items()
    ]
    _apply_rules(items, client, catalogue)
    items.sort(key=lambda item: -item.score)
    return items[:limit]


def blend(
    products: list[str],
    results: dict[str, dict[str, ProductScore]],
    weights: dict[str, float],
    popularity: dict[str, float],
) -> dict[str, tuple[float, list[str]]]:
    """product -> (blended score, scorers behind it). Every scorer answers on the uptake-probability scale, so
    a weighted mean is meaningful; a product a scorer did not score counts as that product's base rate for it,
    so a product without a model is not lifted above modelled ones. ``popularity`` holds the base rates (the
    client's segment's, when the model has them); weight ``base_rate`` adds them as one more source.
    Training learns the weights (``recommenders.stacking``) and evaluates with this same function.
    """
    used = [s for s in (*MAIN_SCORERS, "expert") if results.get(s)]
    base_weight = weights.get("base_rate", 0.0)
    total = 0.0
    for s in used:
        total += weights.get(s, 1.0)
    total += base_weight
    if not used or total <= 0:  # no scorer answered, or only scorers the weights ignore
        return {p: (popularity.get(p, 0.0), ["popularity"]) for p in products}
    out = {}
    for product in products:
        base = popularity.get(product, 0.0)
        # plain left-to-right sums (not sum(), which compensates from Python 3.12): training's vectorised
        # copy of this blend (stacking.blend_matrix) must agree to the last bit, or near-ties rank differently
        weighted = 0.0
        for s in used:
            weighted += weights.get(s, 1.0) * (results[s][product].score if product in results[s] else base)
        weighted += base_weight * base
        out[product] = (weighted / total, [s for s in used if product in results[s]] or ["popularity"])
    return out


def _reasons(product: str, results: dict[str, dict[str, ProductScore]]) -> list[str]:
    reasons: list[str] = []
    for scorer in REASON_ORDER:
        for reason in results.get(scorer, {}).get(product, ProductScore(product, 0.0)).reasons:
            if reason not in reasons:
                reasons.append(reason)
    return reasons[:MAX_REASONS]


def _apply_rules(items: list[Item], client: ClientSnapshot, catalogue: Catalogue) -> None:
    """Boosts first, then forced products above everything (suppressions were applied as a filter)."""
    rules = [r for r in catalogue.rules if r.action != "suppress" and r.applies_to(client.client_id, client.segment)]
    by_product = {item.product: item for item in items}
    for rule in sorted(rules, key=lambda r: r.action == "force"):
        item = by_product.get(rule.product)
        if item is None:
            continue
        if rule.action == "boost":
            item.score *= rule.factor
        else:
            item.score = max(i.score for i in items) + 1.0
        item.sources.append(f"rule:{rule.name}")
        item.reasons.insert(0, f"bank campaign ({rule.name})")
        del item.reasons[MAX_REASONS:]
