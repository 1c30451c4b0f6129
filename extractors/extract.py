"""Pure extractors: one validated event in, store operations out. No I/O, so every rule is unit-testable.

Feature names (the catalogue the feature views and models refer to):
- transactions (append, object = tx_id, time_use = ts):
  ``tx.<dir>.amount``, ``tx.<dir>.mcc.<group>``, ``tx.<dir>.channel.<channel>`` (a known channel, else
  ``other``: ``ExtractionConfig.channels``), ``tx.<dir>.cp.<kind>``
  (counterparty kind: employer, merchant, person, government, bank), ``tx.<dir>.fx.amount`` (foreign
  currency), ``tx.in.salary`` (a credit from an employer or a payroll channel), ``balance`` (when sent)
- client data (replace): source ``client_profile``: ``profile.segment``, ``profile.birth_date``,
  ``profile.region``, ``profile.registered_at``; source ``registry``: ``registry.industry_code``,
  ``registry.director_birth_date`` (object = client_id, time_use = ts)
- client data history (append): every version of those facts again as ``history.<name>``
  (``history.profile.segment``, ``history.registry.industry_code``, ...) in source ``client_history``, object =
  ``v@<ts>``, time_use = ts. The replace keeps only the newest version, which is right for serving; training
  needs the facts as of a past cut and when they changed (``changes(history.profile.region, 90d)``: a move),
  so the versions are kept too.
- applications (append): ``app.<product>.<status>`` = ts (object = application_id)
- products (append): ``product.<product>.<action>`` = ts (object = ``<product>@<ts>``)
Values that are times hold epoch seconds, so ``last(product.deposit.opened)`` is the last opening time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from extractors.events import (
    CLIENT_FACT_FIELDS,
    ApplicationEvent,
    BankEvent,
    ClientEvent,
    ProductEvent,
    TransactionDeleteEvent,
    TransactionEvent,
)
from extractors.mcc import mcc_group
from extractors.ops import AppendFeatures, DeleteObject, ReplaceSource, StoreOp
from feature_store.records import Feature, Value

SOURCE_TRANSACTIONS = "transactions"
SOURCE_PROFILE = "client_profile"
SOURCE_REGISTRY = "registry"
SOURCE_APPLICATIONS = "applications"
SOURCE_PRODUCTS = "products"
SOURCE_HISTORY = "client_history"
# client-data source -> the prefix of its fact names; only such names are kept as history
CLIENT_DATA_PREFIXES = {SOURCE_PROFILE: "profile.", SOURCE_REGISTRY: "registry."}
HISTORY = "history."  # the name prefix of a kept version of a client fact: history.profile.segment
# The name prefixes the extractors write for each source. Aggregates read a name whatever its source, so a
# replace through the API may not write another source's names: `history.profile.birth_date` under
# `client_profile` stood for the client data of a past cut in training.
_NAME_PREFIXES = (
    ("tx.", SOURCE_TRANSACTIONS),
    ("app.", SOURCE_APPLICATIONS),
    ("product.", SOURCE_PRODUCTS),
    (HISTORY, SOURCE_HISTORY),
    *((prefix, source) for source, prefix in CLIENT_DATA_PREFIXES.items()),
)


def source_of_name(name: str) -> str | None:
    """The source whose extractor writes ``name``, or None for a name no extractor writes."""
    if name == "balance":
        return SOURCE_TRANSACTIONS
    return next((source for prefix, source in _NAME_PREFIXES if name.startswith(prefix)), None)


COUNTERPARTY_KINDS = ("employer", "merchant", "person", "government", "bank")


KNOWN_CHANNELS = frozenset(
    {"atm", "online", "mobile", "pos", "card", "cash", "branch", "acquiring", "transfer", "payroll", "sbp"}
)
OTHER_CHANNEL = "other"


@dataclass(frozen=True)
class ExtractionConfig:
    home_currency: str = "RUB"
    # how far an event time may be ahead of the consumer's clock (clock skew); further is a dead letter
    max_ahead_s: float = 60.0
    # Channels that name their own feature (tx.<dir>.channel.<channel>); any other is counted as ``other``. A
    # channel is the producer's free text: kept as given, every new spelling would add a feature name to the
    # store's dictionary for good (and to every scan over names), without bound.
    channels: frozenset[str] = KNOWN_CHANNELS


def counterparty_kind(counterparty: str | None) -> str | None:
    """``employer:acme`` -> ``employer``; unknown or missing prefixes give None."""
    if not counterparty or ":" not in counterparty:
        return None
    kind = counterparty.split(":", 1)[0].lower()
    return kind if kind in COUNTERPARTY_KINDS else None


def extract_transaction(event: TransactionEvent, config: ExtractionConfig) -> list[Feature]:
    d = event.direction

    def feature(name: str, value: Value) -> Feature:
        return Feature(event.client_id, SOURCE_TRANSACTIONS, name, event.tx_id, value, event.ts)

    features = [feature(f"tx.{d}.amount", event.amount)]
    if event.mcc is not None:
        features.append(feature(f"tx.{d}.mcc.{mcc_group(event.mcc)}", event.amount))
    if event.channel:
        channel = event.channel if event.channel in config.channels else OTHER_CHANNEL
        features.append(feature(f"tx.{d}.channel.{channel}", event.amount))
    kind = counterparty_kind(event.counterparty)
    if kind is not None:
        features.append(feature(f"tx.{d}.cp.{kind}", event.amount))
    if event.currency != config.home_currency:
        features.append(feature(f"tx.{d}.fx.amount", event.amount))
    if d == "in" and (kind == "employer" or event.channel == "payroll"):
        features.append(feature("tx.in.salary", event.amount))
    if event.balance is not None:
        features.append(feature("balance", event.balance))
    return features


def extract_client(event: ClientEvent) -> list[ReplaceSource]:
    """Client data replaces two sources: the profile and the company registry data."""

    def features(source: str) -> tuple[Feature, ...]:
        prefix = CLIENT_DATA_PREFIXES[source]
        facts = ((name, getattr(event, field)) for name, field in CLIENT_FACT_FIELDS.items() if name.startswith(prefix))
        return tuple(
            Feature(event.client_id, source, name, event.client_id, value, event.ts)
            for name, value in facts
            if value is not None
        )

    profile = features(SOURCE_PROFILE)
    registry = features(SOURCE_REGISTRY)
    return [
        ReplaceSource(event.client_id, SOURCE_PROFILE, event.ts, profile),
        ReplaceSource(event.client_id, SOURCE_REGISTRY, event.ts, registry),
    ]


def client_history(subject: str, version: float, facts: Sequence[Feature]) -> tuple[Feature, ...]:
    """The version of client facts to keep: ``profile.region`` becomes ``history.profile.region`` at the
    version's time (only names of their own source's prefix: nothing else can write into a history name).
    Idempotent (the object is the version, to the microsecond), so a replay or a redelivery adds nothing."""
    return tuple(
        Feature(subject, SOURCE_HISTORY, HISTORY + f.name, f"v@{version:.6f}", f.value, version)
        for f in facts
        if f.name.startswith(CLIENT_DATA_PREFIXES.get(f.source, "\0"))
    )


def extract_application(event: ApplicationEvent, at: float | None = None) -> Feature:
    """The application's status at its time, or at ``at`` (a time stamped too far ahead, taken at the latest
    accepted: ``extractors.batch.within_skew``)."""
    when = event.ts if at is None else at
    return Feature(
        event.client_id, SOURCE_APPLICATIONS, f"app.{event.product}.{event.status}", event.application_id, when, when
    )


def extract_product(event: ProductEvent, at: float | None = None) -> Feature:
    """An opening or closing at its time (or ``at``, as for applications). The object is the account when the
    event names one, else the product and the event's own time, never ``at``: a resend must be the same row."""
    when = event.ts if at is None else at
    obj = event.account_id if event.account_id is not None else f"{event.product}@{event.ts:.0f}"
    return Feature(event.client_id, SOURCE_PRODUCTS, f"product.{event.product}.{event.action}", obj, when, when)


def extract(event: BankEvent, config: ExtractionConfig, origin: int = -1, at: float | None = None) -> list[StoreOp]:
    """Turn one event into store operations (``origin`` tags them with the message they came from; ``at``, an
    application's or product event's time when it is not its own: ``extractors.batch.within_skew``)."""
    if isinstance(event, TransactionEvent):
        return [AppendFeatures(tuple(extract_transaction(event, config)), origin)]
    if isinstance(event, TransactionDeleteEvent):
        return [DeleteObject(event.client_id, event.tx_id, origin, source=SOURCE_TRANSACTIONS)]
    if isinstance(event, ClientEvent):
        replaces = extract_client(event)
        history = client_history(event.client_id, event.ts, [f for op in replaces for f in op.features])
        return [
            *(ReplaceSource(op.subject, op.source, op.version, op.features, origin) for op in replaces),
            AppendFeatures(history, origin),
        ]
    if isinstance(event, ApplicationEvent):
        return [AppendFeatures((extract_application(event, at),), origin)]
    if isinstance(event, ProductEvent):
        return [AppendFeatures((extract_product(event, at),), origin)]
    raise TypeError(f"no extractor for {type(event).__name__}")
