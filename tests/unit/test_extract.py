from __future__ import annotations

import gc
from collections.abc import Iterator

import msgpack
import orjson
import pytest

from extractors.decode import InvalidEvent, MalformedMessage, UnknownEventType, decode_event
from extractors.direct import BULK_GC_THRESHOLD, load_events
from extractors.events import ClientEvent, TransactionEvent
from extractors.extract import ExtractionConfig, counterparty_kind, extract, extract_transaction
from extractors.mcc import mcc_group
from extractors.ops import AppendFeatures, DeleteObject, ReplaceSource, apply_ops
from feature_store.fake import InMemoryFeatureStore
from feature_store.records import OTHER_ANCHORS

TX = {
    "tx_id": "t1",
    "client_id": "c1",
    "ts": "2026-03-01T10:00:00Z",
    "amount": 120.5,
    "currency": "RUB",
    "direction": "out",
    "mcc": 4511,
    "channel": "online",
    "counterparty": "merchant:aeroflot",
    "extra": "ignored",
}


def test_transaction_features() -> None:
    event = decode_event("bank.transactions", orjson.dumps(TX))
    assert isinstance(event, TransactionEvent) and event.ts == 1772359200.0
    names = {f.name: f.value for f in extract_transaction(event, ExtractionConfig())}
    assert names == {
        "tx.out.amount": 120.5,
        "tx.out.mcc.travel": 120.5,
        "tx.out.channel.online": 120.5,
        "tx.out.cp.merchant": 120.5,
    }
    assert {f.object for f in extract_transaction(event, ExtractionConfig())} == {"t1"}
    # the anchor comes first: the store tells a transaction's versions apart by it (lua/put.lua OTHER_ANCHORS)
    for direction in ("in", "out"):
        flipped = TransactionEvent.model_validate({**TX, "direction": direction, "balance": 5, "ts": 1772359200})
        rows = extract_transaction(flipped, ExtractionConfig())
        assert rows[0].name == f"tx.{direction}.amount" and rows[0].name in OTHER_ANCHORS
        assert not any(f.name in OTHER_ANCHORS for f in rows[1:])


def test_salary_foreign_currency_and_balance() -> None:
    salary = TransactionEvent.model_validate(
        {
            **TX,
            "direction": "in",
            "counterparty": "employer:acme",
            "mcc": None,
            "currency": "EUR",
            "balance": 5000,
            "ts": 1772359200,
        }
    )
    names = {f.name for f in extract_transaction(salary, ExtractionConfig(home_currency="RUB"))}
    assert {"tx.in.salary", "tx.in.fx.amount", "tx.in.cp.employer", "balance"} <= names


def test_unknown_channels_are_counted_as_other() -> None:
    """A producer's new channel spellings fold into one feature instead of adding feature names without bound;
    the configured channels keep their own, and a payroll credit is still a salary."""
    names = set()
    for i in range(50):
        event = TransactionEvent.model_validate({**TX, "tx_id": f"t{i}", "channel": f"channel_{i}", "ts": 1772359200})
        names |= {f.name for f in extract_transaction(event, ExtractionConfig())}
    assert names == {"tx.out.amount", "tx.out.mcc.travel", "tx.out.channel.other", "tx.out.cp.merchant"}
    kiosk = TransactionEvent.model_validate({**TX, "channel": "kiosk", "ts": 1772359200})
    config = ExtractionConfig(channels=frozenset({"kiosk"}))
    assert "tx.out.channel.kiosk" in {f.name for f in extract_transaction(kiosk, config)}
    payroll = TransactionEvent.model_validate(
        {**TX, "direction": "in", "channel": "payroll", "counterparty": None, "ts": 1772359200}
    )
    assert "tx.in.salary" in {f.name for f in extract_transaction(payroll, ExtractionConfig())}


def test_msgpack_payloads_are_accepted() -> None:
    event = decode_event("bank.transactions", msgpack.packb(TX), [("content-type", b"application/msgpack")])
    assert isinstance(event, TransactionEvent) and event.amount == 120.5


@pytest.mark.parametrize(
    ("topic", "payload", "error"),
    [
        ("bank.transactions", b"{not json", MalformedMessage),
        ("bank.transactions", b"[1, 2]", MalformedMessage),
        ("bank.transactions", orjson.dumps({**TX, "amount": 0}), InvalidEvent),
        ("bank.transactions", orjson.dumps({**TX, "direction": "sideways"}), InvalidEvent),
        ("bank.transactions", orjson.dumps({**TX, "ts": "not a date"}), InvalidEvent),
        ("bank.transactions", orjson.dumps({**TX, "ts": 12}), InvalidEvent),  # 1970: out of range
        ("bank.transactions", orjson.dumps({**TX, "client_id": "bad id!"}), InvalidEvent),
        ("bank.transactions", orjson.dumps({**TX, "type": "refund"}), UnknownEventType),
        ("bank.unknown", orjson.dumps(TX), UnknownEventType),
        ("bank.clients", orjson.dumps({"client_id": "c1", "ts": 1772359200, "segment": "vip"}), InvalidEvent),
    ],
)
def test_bad_messages_raise_typed_errors_with_reasons(topic: str, payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        decode_event(topic, payload)
    assert str(caught.value)


def test_client_event_replaces_profile_and_registry() -> None:
    event = ClientEvent.model_validate(
        {
            "client_id": "c1",
            "ts": 1772359200,
            "segment": "sme",
            "region": "kazan",
            "birth_date": "1980-05-01",
            "industry_code": "47.11",
        }
    )
    ops = extract(event, ExtractionConfig(), origin=3)
    assert [type(op) for op in ops] == [ReplaceSource, ReplaceSource, AppendFeatures]
    profile, registry, history = ops
    assert isinstance(profile, ReplaceSource) and isinstance(registry, ReplaceSource)
    assert isinstance(history, AppendFeatures) and history.origin == 3
    # every fact is kept again as a version: same value, at the event's time, the version as object
    assert {(f.source, f.name, f.object, f.value, f.time_use) for f in history.features} == {
        ("client_history", "history.profile.segment", "v@1772359200.000000", "sme", 1772359200),
        ("client_history", "history.profile.region", "v@1772359200.000000", "kazan", 1772359200),
        ("client_history", "history.profile.birth_date", "v@1772359200.000000", 325987200.0, 1772359200),
        ("client_history", "history.registry.industry_code", "v@1772359200.000000", "47.11", 1772359200),
    }
    assert profile.source == "client_profile" and profile.version == 1772359200 and profile.origin == 3
    assert {f.name: f.value for f in profile.features} == {
        "profile.segment": "sme",
        "profile.region": "kazan",
        "profile.birth_date": 325987200.0,
    }
    assert {f.name for f in registry.features} == {"registry.industry_code"}


def test_applications_products_and_deletes() -> None:
    app = decode_event(
        "bank.applications",
        orjson.dumps(
            {"application_id": "a1", "client_id": "c1", "product": "deposit", "status": "submitted", "ts": 1772359200}
        ),
    )
    (op,) = extract(app, ExtractionConfig())
    assert isinstance(op, AppendFeatures) and op.features[0].name == "app.deposit.submitted"
    assert op.features[0].value == 1772359200
    product = decode_event(
        "bank.products",
        orjson.dumps({"client_id": "c1", "product": "credit_card", "action": "opened", "ts": 1772359200}),
    )
    (op,) = extract(product, ExtractionConfig())
    assert isinstance(op, AppendFeatures) and op.features[0].name == "product.credit_card.opened"
    delete = decode_event(
        "bank.transaction-deletes", orjson.dumps({"tx_id": "t1", "client_id": "c1", "ts": 1772359200})
    )
    assert extract(delete, ExtractionConfig()) == [DeleteObject("c1", "t1", source="transactions")]


def test_mcc_groups_and_counterparty_kinds() -> None:
    assert (mcc_group(5411), mcc_group(3005), mcc_group(3600), mcc_group(1)) == (
        "groceries",
        "travel",
        "travel",
        "other",
    )
    assert counterparty_kind("employer:x") == "employer"
    assert counterparty_kind("alien:x") is None and counterparty_kind(None) is None


async def test_apply_ops_semantics_on_the_fake_store() -> None:
    store = InMemoryFeatureStore(deny_subjects=["BANK"])
    config = ExtractionConfig()
    tx = TransactionEvent.model_validate({**TX, "ts": 1772359200})
    ops = [*extract(tx, config, 0), DeleteObject("c1", "t1", 1), *extract(tx, config, 2)]
    result = await apply_ops(store, ops)
    assert store.snapshot("c1") == set() and result.deleted == 4  # delete applied after both appends
    denied = TransactionEvent.model_validate({**TX, "client_id": "BANK", "tx_id": "t9", "ts": 1772359200})
    result = await apply_ops(store, extract(denied, config, 7))
    assert 7 in result.refused and "SUBJECT_DENIED" in result.refused[7]


async def test_a_bulk_load_collects_less_often_and_restores_the_collector_even_when_it_fails() -> None:
    """`load_events` raises the collector's threshold for the load only (fewer passes over millions of
    short-lived rows), and gives it back afterwards, also when an event is refused."""
    default = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    def events() -> Iterator[tuple[str, str, dict[str, object]]]:
        seen.append(gc.get_threshold())
        yield "clients", "c1", {"not": "a client event"}

    with pytest.raises(InvalidEvent):
        await load_events(InMemoryFeatureStore(), events())
    assert seen == [(BULK_GC_THRESHOLD, 20, 100)]
    assert gc.get_threshold() == default


async def test_a_correction_still_supersedes_when_only_some_transaction_features_are_loaded() -> None:
    """``load_events(transaction_names=...)``, ``rtrec evaluate``'s load: the anchor (a transaction's amount) is
    loaded whatever the names, as the store knows a corrected direction by it. Without it the correction below
    would load nothing and leave the first version standing."""
    store = InMemoryFeatureStore()
    names = frozenset({"tx.out.mcc.travel"})
    await load_events(store, [("transactions", "c1", TX)], transaction_names=names)
    assert {row[1] for row in store.snapshot("c1")} == {"tx.out.amount", "tx.out.mcc.travel"}
    corrected = {**TX, "direction": "in", "mcc": None}  # in the next load: another batch
    await load_events(store, [("transactions", "c1", corrected)], transaction_names=names)
    assert {row[1] for row in store.snapshot("c1")} == {"tx.in.amount"}


async def test_a_correction_of_features_left_out_supersedes_as_in_a_whole_load() -> None:
    """The correction keeps the amount (the anchor) and changes only features left out: a category to none and
    another counterparty. Trimmed, it matched the first version's trimmed rows, so nothing changed and the
    travel spending stayed (a reviewer's find). A repeat within the load now goes whole."""
    names = frozenset({"tx.out.mcc.travel"})
    corrected = {**TX, "mcc": None, "counterparty": "person:p1", "channel": "pos"}
    events = [("transactions", "c1", TX), ("clients", "c0", {"client_id": "c0", "ts": 1772359200, "segment": "sme"})]
    whole, trimmed = InMemoryFeatureStore(), InMemoryFeatureStore()
    await load_events(whole, [*events, ("transactions", "c1", corrected)])
    await load_events(trimmed, [*events, ("transactions", "c1", corrected)], transaction_names=names)
    assert {row[1] for row in whole.snapshot("c1")} == {"tx.out.amount", "tx.out.channel.pos", "tx.out.cp.person"}
    assert trimmed.snapshot("c1") == whole.snapshot("c1")
