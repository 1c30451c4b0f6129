"""No message can stop a consumer: whatever bytes and headers a record carries, extraction ends in store
operations or in exactly one dead letter with a reason, and the dead letter always fits in the broker."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extractors.batch import LOG_APPEND_TIME, extract_batch
from extractors.decode import INPUT_TOPICS, MAX_EVENT_BYTES
from extractors.dlq import MAX_PAYLOAD_BYTES, DeadLetter
from extractors.extract import ExtractionConfig

# What the broker accepts by default (message.max.bytes); a dead letter must stay under it.
BROKER_MAX_MESSAGE_BYTES = 1_048_588
# "extractor_error" (the safety net for bugs) is not among them: validation must name every hostile shape.
KNOWN_KINDS = {"malformed", "invalid", "unknown_type", "unsupported_content_type", "future_timestamp"}
MSGPACK = [("content-type", b"application/msgpack")]

VALID: dict[str, dict[str, Any]] = {
    "bank.transactions": {
        "tx_id": "t1",
        "client_id": "c1",
        "ts": 1790000000,
        "amount": 12.5,
        "currency": "RUB",
        "direction": "out",
        "mcc": 5411,
    },
    "bank.transaction-deletes": {"tx_id": "t1", "client_id": "c1", "ts": 1790000000},
    "bank.clients": {"client_id": "c1", "ts": 1790000000, "segment": "retail", "birth_date": "1980-05-01"},
    "bank.applications": {
        "application_id": "a1",
        "client_id": "c1",
        "product": "deposit",
        "status": "submitted",
        "ts": 1790000000,
    },
    "bank.products": {"client_id": "c1", "product": "deposit", "action": "opened", "ts": 1790000000},
}


@dataclass
class Record:
    topic: str
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"k"
    timestamp: int = 0
    timestamp_type: int = 0  # the producer's time: extraction bounds event times by the clock


def outcome(record: Record) -> tuple[int, list[DeadLetter]]:
    """Run extraction on one record; it must not raise and must end in ops or one dead letter."""
    extracted = extract_batch([record], ExtractionConfig())  # type: ignore[list-item]
    assert (len(extracted.ops) > 0) != (len(extracted.dead) == 1), (extracted.ops, extracted.dead)
    for letter in extracted.dead:
        assert letter.reason and letter.error_kind in KNOWN_KINDS
        assert len(letter.reason) < 2000
        assert (letter.topic, letter.partition, letter.offset) == (record.topic, record.partition, record.offset)
        assert dead_letter_size(letter) < BROKER_MAX_MESSAGE_BYTES - 4096
    return len(extracted.ops), extracted.dead


def dead_letter_size(letter: DeadLetter) -> int:
    headers = sum(len(k.encode()) + len(v) for k, v in letter.kafka_headers())
    return len(letter.kafka_value() or b"") + len(letter.kafka_key() or b"") + headers


# ---- the shapes named in the field report and the issue -------------------------------------------------
HOSTILE_JSON: list[tuple[str, bytes]] = [
    ("unhashable type", b'{"type": [], "tx_id": "x"}'),
    ("object as type", b'{"type": {"a": 1}}'),
    ("integer beyond any range", b'{"ts": ' + b"1" * 400 + b"}"),
    ("float overflow", b'{"amount": 1e400}'),
    ("nesting bomb", b"[" * 100_000 + b"]" * 100_000),
    ("object nesting bomb", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("invalid utf-8", b'{"tx_id": "\xff\xfe", "client_id": "c"}'),
    ("null", b"null"),
    ("empty object", b"{}"),
    ("empty bytes", b""),
    ("a bare string", b'"transaction"'),
    ("truncated", b'{"tx_id": "x", "client_id": '),
]


@pytest.mark.parametrize("topic", INPUT_TOPICS)
@pytest.mark.parametrize(("label", "payload"), HOSTILE_JSON, ids=[label for label, _ in HOSTILE_JSON])
def test_hostile_json_becomes_one_dead_letter(topic: str, label: str, payload: bytes) -> None:
    ops, dead = outcome(Record(topic, payload))
    assert ops == 0 and len(dead) == 1, label


@pytest.mark.parametrize("topic", INPUT_TOPICS)
@pytest.mark.parametrize(
    "change",
    [
        {"ts": 1e300},
        {"ts": -1e12},
        {"ts": -1},
        {"ts": "10000-01-01T00:00:00"},
        {"ts": "0001-01-01T00:00:00+14:00"},
        {"ts": "nan"},
        {"ts": True},
        {"ts": None},
        {"client_id": ""},
        {"client_id": ["c1"]},
        {"client_id": {"$gt": ""}},
        {"client_id": "x" * 10_000},
        {"type": "refund"},
        {"type": 1},
        {"client_id": True},
    ],
    ids=repr,
)
def test_out_of_range_and_wrong_typed_fields_are_dead_letters(topic: str, change: dict[str, Any]) -> None:
    payload = orjson.dumps({**VALID[topic], **change})
    ops, dead = outcome(Record(topic, payload))
    assert ops == 0 and dead[0].error_kind in {"invalid", "unknown_type"}


@pytest.mark.parametrize("change", [{"birth_date": 2010}, {"birth_date": "90"}, {"registered_at": "2019"}], ids=repr)
def test_a_year_sent_as_a_date_is_a_dead_letter(change: dict[str, Any]) -> None:
    """Read as epoch seconds, a birth date of 2010 is 1970-01-01 00:33: a child looked 56 (a reviewer's find)."""
    ops, dead = outcome(Record("bank.clients", orjson.dumps({**VALID["bank.clients"], **change})))
    assert ops == 0 and dead[0].error_kind == "invalid" and "reads as a year" in dead[0].reason


@pytest.mark.parametrize("birth_date", [-36007.019, 0, "1970-01-01T05:00:00Z", "1969-12-31"], ids=repr)
def test_a_date_near_1970_that_is_no_year_is_kept(birth_date: object) -> None:
    """A simulated client born hours before 1970-01-01 (a fraction of a second), midnight, or any ISO date."""
    ops, dead = outcome(Record("bank.clients", orjson.dumps({**VALID["bank.clients"], "birth_date": birth_date})))
    assert ops > 0 and not dead


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, -5.0, 0.0])
def test_amounts_that_are_not_money_are_refused_even_through_msgpack(value: float) -> None:
    payload = msgpack.packb({**VALID["bank.transactions"], "amount": value})
    ops, dead = outcome(Record("bank.transactions", payload, MSGPACK))
    assert ops == 0 and dead[0].error_kind == "invalid"
    balance = msgpack.packb({**VALID["bank.transactions"], "balance": math.nan})
    assert outcome(Record("bank.transactions", balance, MSGPACK))[0] == 0


@pytest.mark.parametrize(
    ("label", "payload"),
    [
        ("array as a map key", b"\x81\x91\x01\x01"),
        ("map as a map key", b"\x81\x81\x01\x01\x01"),
        ("integer keys", msgpack.packb({1: "a", 2: "b"})),
        ("nested array key", b"\x81\xa1a\x81\x91\x01\x01"),
        ("array nesting bomb", b"\x91" * 100_000 + b"\x01"),
        ("ext type", msgpack.packb(msgpack.ExtType(5, b"xyz"))),
        ("truncated", msgpack.packb(VALID["bank.transactions"])[:-3]),
        ("trailing bytes", msgpack.packb(VALID["bank.transactions"]) + b"\x01"),
        ("invalid utf-8 string", b"\x81\xa6tx_id\xa2\xff\xfe"),
        ("huge declared length", b"\xdb\xff\xff\xff\xff"),
    ],
)
def test_hostile_msgpack_becomes_one_dead_letter(label: str, payload: bytes) -> None:
    ops, dead = outcome(Record("bank.transactions", payload, MSGPACK))
    assert ops == 0 and dead[0].error_kind == "malformed", label


@pytest.mark.parametrize(
    "headers",
    [
        [("content-type", b"text/xml")],
        [("content-type", b"application/octet-stream")],
        [("content-type", b"\xff\xfe")],
        [("Content-Type", b"APPLICATION/MSGPACK; charset=binary")],  # msgpack header on JSON bytes
    ],
    ids=repr,
)
def test_wrong_content_types_are_dead_letters(headers: list[tuple[str, bytes | None]]) -> None:
    ops, dead = outcome(Record("bank.transactions", orjson.dumps(VALID["bank.transactions"]), headers))
    assert ops == 0 and dead[0].error_kind in {"unsupported_content_type", "malformed"}


@pytest.mark.parametrize("change", [{"amount": True}, {"amount": "1_000"}, {"mcc": True}, {"balance": False}], ids=repr)
def test_booleans_and_odd_numerals_are_not_numbers(change: dict[str, Any]) -> None:
    ops, dead = outcome(Record("bank.transactions", orjson.dumps({**VALID["bank.transactions"], **change})))
    assert ops == 0 and dead[0].error_kind == "invalid"


def test_blank_optional_text_is_absent_not_an_empty_feature() -> None:
    client = {**VALID["bank.clients"], "region": "   ", "industry_code": ""}
    extracted = extract_batch([Record("bank.clients", orjson.dumps(client))], ExtractionConfig())  # type: ignore[list-item]
    names = {f.name for op in extracted.ops for f in op.features}  # type: ignore[union-attr]
    assert "profile.segment" in names and not names & {"profile.region", "registry.industry_code"}


@pytest.mark.parametrize("topic", ["bank.transactions", "bank.clients"])
def test_an_event_time_ahead_of_the_clock_is_a_dead_letter_within_the_skew_it_is_not(topic: str) -> None:
    """A fast producer clock or a local time without its zone: stored ahead, an application would hide from the
    "applied for" filter and a client version would win against every real update until then."""
    now = 1_790_000_000.0
    config = ExtractionConfig(max_ahead_s=300)

    def extracted(ts: object) -> Any:
        record = Record(topic, orjson.dumps({**VALID[topic], "ts": ts}))
        return extract_batch([record], config, now=now)  # type: ignore[list-item]

    assert extracted(now + 299).ops and not extracted(now + 299).dead
    dead = extracted(now + 3 * 3600).dead
    assert len(dead) == 1 and dead[0].error_kind == "future_timestamp" and "10800 s ahead" in dead[0].reason
    local_time = datetime.fromtimestamp(now, timezone(timedelta(hours=3))).replace(tzinfo=None).isoformat()
    assert extracted(local_time).dead[0].error_kind == "future_timestamp"  # UTC+3 sent without its zone


@pytest.mark.parametrize("topic", ["bank.applications", "bank.products"])
def test_an_application_or_product_event_stamped_ahead_is_kept_at_the_latest_time_accepted(topic: str) -> None:
    """Dead-lettered, an application stamped 90 s ahead (a producer clock running fast) was lost: its product
    was offered to the client who had applied for it; a lost opening offered a product the client held."""
    now = 1_790_000_000.0
    config = ExtractionConfig(max_ahead_s=60)
    record = Record(topic, orjson.dumps({**VALID[topic], "ts": now + 90}))
    extracted = extract_batch([record], config, now=now)  # type: ignore[list-item]
    assert not extracted.dead and extracted.taken_at_latest == 1
    assert {f.time_use for op in extracted.ops for f in op.features} == {now + 60}  # type: ignore[union-attr]
    on_time = extract_batch([Record(topic, orjson.dumps({**VALID[topic], "ts": now}))], config, now=now)  # type: ignore[list-item]
    assert on_time.taken_at_latest == 0 and {f.time_use for op in on_time.ops for f in op.features} == {now}  # type: ignore[union-attr]


def test_a_product_event_resent_after_it_was_taken_at_the_latest_time_is_the_same_row() -> None:
    """Its object is the event's own time (or its account), not the time it was taken at: a producer's retry
    arriving 2 s later made a second opening, and one closing then left the product held for ever."""
    event = orjson.dumps({**VALID["bank.products"], "ts": 1_790_000_000.0 + 3 * 3600})
    rows = set()
    for arrived in (1_790_000_000.0, 1_790_000_002.0):
        record = Record("bank.products", event, timestamp=int(arrived * 1000), timestamp_type=LOG_APPEND_TIME)
        extracted = extract_batch([record], ExtractionConfig(max_ahead_s=60))  # type: ignore[list-item]
        rows |= {(f.name, f.object) for op in extracted.ops for f in op.features}  # type: ignore[union-attr]
    assert len(rows) == 1


def test_a_deletion_is_never_refused_for_its_time_which_is_not_stored() -> None:
    """A reversal dead-lettered for its time left the reversed payment in every sum for 500 days."""
    now = 1_790_000_000.0
    record = Record("bank.transaction-deletes", orjson.dumps({**VALID["bank.transaction-deletes"], "ts": now + 3600}))
    extracted = extract_batch([record], ExtractionConfig(max_ahead_s=60), now=now)  # type: ignore[list-item]
    assert extracted.ops and not extracted.dead


def test_an_event_time_is_judged_against_its_arrival_where_the_broker_stamps_it() -> None:
    """Against the clock at processing, the same record was refused on arrival and applied hours later (a
    consumer catching up, a replay), and a consumer host whose clock ran slow refused events on time."""
    arrived = 1_790_000_000.0

    def stamped(ts: float) -> Record:
        payload = orjson.dumps({**VALID["bank.clients"], "ts": ts})
        return Record("bank.clients", payload, timestamp=int(arrived * 1000), timestamp_type=LOG_APPEND_TIME)

    for now in (arrived, arrived + 4 * 3600):
        dead = extract_batch([stamped(arrived + 3 * 3600)], ExtractionConfig(), now=now).dead  # type: ignore[list-item]
        assert [d.error_kind for d in dead] == ["future_timestamp"]
    on_time = extract_batch([stamped(arrived - 10)], ExtractionConfig(), now=arrived - 7200)  # type: ignore[list-item]
    assert on_time.ops and not on_time.dead


def test_parameters_and_null_headers_do_not_stop_a_good_message() -> None:
    headers = [("content-type", b"application/json; charset=utf-8"), ("trace", None), ("content-type", None)]
    ops, dead = outcome(Record("bank.transactions", orjson.dumps(VALID["bank.transactions"]), headers))
    assert ops == 1 and not dead


def test_a_message_near_the_broker_limit_gives_a_dead_letter_that_fits() -> None:
    payload = b'{"tx_id": "' + b"x" * (BROKER_MAX_MESSAGE_BYTES - 2000) + b'"}'
    headers = [("h", b"v" * 50_000)]  # a header larger than the copied-headers cap
    ops, dead = outcome(Record("bank.transactions", payload, headers, key=b"k" * 5000))
    letter = dead[0]
    assert ops == 0 and len(payload) > MAX_EVENT_BYTES
    kafka_headers = dict(letter.kafka_headers())
    assert kafka_headers["dlq.truncated"] == b"payload" and kafka_headers["dlq.size"] == str(len(payload)).encode()
    assert len(kafka_headers["dlq.sha256"]) == 64 and kafka_headers["dlq.headers_dropped"] == b"1"
    assert letter.kafka_value() == payload[:MAX_PAYLOAD_BYTES]


def test_a_bug_in_an_extractor_parks_the_message_and_the_batch_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import extractors.batch

    real_extract = extractors.batch.extract

    def flaky(event: Any, config: ExtractionConfig, origin: int = -1, at: float | None = None) -> Any:
        if origin == 0:
            raise KeyError("a bug")
        return real_extract(event, config, origin, at)

    monkeypatch.setattr(extractors.batch, "extract", flaky)
    good = Record("bank.transactions", orjson.dumps(VALID["bank.transactions"]))
    extracted = extract_batch([good, good], ExtractionConfig())  # type: ignore[list-item]
    assert [letter.error_kind for letter in extracted.dead] == ["extractor_error"]
    assert "KeyError" in extracted.dead[0].reason and {op.origin for op in extracted.ops} == {1}


def test_a_letter_with_many_tiny_headers_still_fits() -> None:
    payload = b'{"tx_id": "' + b"x" * (MAX_PAYLOAD_BYTES - 100) + b'"}'
    _, dead = outcome(Record("bank.transactions", payload, [("h", b"")] * 200_000))
    assert dict(dead[0].kafka_headers())["dlq.headers_dropped"] == b"200000"


def test_a_header_key_read_leniently_is_sent_as_valid_utf8() -> None:
    letter = outcome(Record("bank.transactions", b"{}", [("bad\udcffkey", b"v")]))[1][0]
    keys = [key for key, _ in letter.kafka_headers()]
    assert "bad\ufffdkey" in keys and all(key.encode() for key in keys)


def test_a_null_message_is_a_dead_letter() -> None:
    assert outcome(Record("bank.clients", None))[0] == 0


def test_the_valid_events_used_above_really_are_valid() -> None:
    for topic, event in VALID.items():
        assert outcome(Record(topic, orjson.dumps(event)))[0] >= 1
        assert outcome(Record(topic, msgpack.packb(event), MSGPACK))[0] >= 1


# ---- property tests: any shape at all -------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
msgpack_keys = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(msgpack_keys, inner, max_size=4),
    max_leaves=20,
)
FIELDS = sorted({name for event in VALID.values() for name in event} | {"type", "balance", "segment"})
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(topic=st.sampled_from(INPUT_TOPICS), payload=st.binary(max_size=300), content_type=st.binary(max_size=30))
def test_any_bytes_with_any_content_type(topic: str, payload: bytes, content_type: bytes) -> None:
    outcome(Record(topic, payload, [("content-type", content_type)]))


@PROPERTY_SETTINGS
@given(
    topic=st.sampled_from(INPUT_TOPICS),
    changes=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
)
def test_valid_events_with_any_fields_replaced_by_any_json(topic: str, changes: dict[str, Any]) -> None:
    try:
        payload = orjson.dumps({**VALID[topic], **changes})
    except orjson.JSONEncodeError:  # integers beyond 64 bits: JSON producers can send them as text
        payload = repr({**VALID[topic], **changes}).encode()
    outcome(Record(topic, payload))


@PROPERTY_SETTINGS
@given(
    topic=st.sampled_from(INPUT_TOPICS),
    changes=st.dictionaries(st.sampled_from(FIELDS), msgpack_values, max_size=4),
    extra=st.dictionaries(msgpack_keys, msgpack_values, max_size=3),
)
def test_valid_events_with_any_msgpack_values_and_keys(
    topic: str, changes: dict[Any, Any], extra: dict[Any, Any]
) -> None:
    body: dict[Any, Any] = {**VALID[topic], **changes, **extra}
    outcome(Record(topic, msgpack.packb(body, use_bin_type=True), MSGPACK))
