from __future__ import annotations

import pytest

from feature_store.buckets import bucket_id_for, even_bucket_ranges, invert, tarantool_crc32
from feature_store.specs import AggregateSpec, SpecError, parse_spec, parse_window
from feature_store.ttl import TtlPolicy


def test_crc32_matches_tarantool_digest() -> None:
    # digest.crc32('abc') in Tarantool (CRC-32C without the final inversion)
    assert tarantool_crc32("abc") == 3384066120


def test_bucket_ids_are_in_range_and_stable() -> None:
    ids = {bucket_id_for(f"client-{i}", 3000) for i in range(10_000)}
    assert min(ids) >= 1 and max(ids) <= 3000
    assert len(ids) > 2500  # spreads over the buckets
    assert bucket_id_for("abc", 3000) == 3384066120 % 3000 + 1


def test_even_ranges_cover_every_bucket_once() -> None:
    assignment = even_bucket_ranges(3000, [1, 2, 3, 4, 5, 6, 7])
    owner = invert(assignment)
    assert sorted(owner) == list(range(1, 3001))
    sizes = [len(b) for b in assignment.values()]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2592000), ("12h", 43200), ("15m", 900), ("1w", 604800), ("90s", 90), ("1.5d", 129600), (None, 0), ("", 0)],
)
def test_parse_window(text: str | None, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["30", "d30", "-1d", "0d", "5y", "abc"])
def test_bad_windows_are_rejected(text: str) -> None:
    with pytest.raises(SpecError):
        parse_window(text)


def test_parse_spec_and_label() -> None:
    spec = parse_spec("sum(tx.out.amount, 30d)")
    assert spec == AggregateSpec("sum", "tx.out.amount", 30 * 86400)
    assert spec.label == "sum(tx.out.amount,30d)"
    assert parse_spec("last(profile.segment)").label == "last(profile.segment)"
    with pytest.raises(SpecError):
        parse_spec("median(tx.out.amount, 30d)")
    with pytest.raises(SpecError):
        parse_spec("sum tx.out.amount")


def test_ttl_policy_most_specific_rule_wins() -> None:
    policy = TtlPolicy(default_days=400, source_days={"client_profile": 10}, name_days={"balance": 1})
    assert policy.expires_at("transactions", "tx.out.amount", 0) == 400 * 86400
    assert policy.expires_at("client_profile", "profile.segment", 0) == 10 * 86400
    assert policy.expires_at("transactions", "balance", 100) == 100 + 86400


def test_default_ttl_policy_is_the_configured_default() -> None:
    from deploy.settings import TtlSettings

    policy = TtlPolicy.from_settings()
    assert policy.expires_at("client_profile", "profile.segment", 0) == TtlSettings().sources["client_profile"] * 86400
    assert policy.expires_at("transactions", "tx.out.amount", 0) == TtlSettings().sources["transactions"] * 86400


def test_a_tombstone_outlives_every_row_of_its_scope() -> None:
    policy = TtlPolicy(default_days=500, source_days={"products": 36525, "transactions": 400}, name_days={"b": 900})
    assert policy.longest_days("transactions") == 900  # a name rule may keep a row longer than its source
    assert policy.longest_days("applications") == 900
    assert policy.longest_days(None) == 36525
    assert TtlPolicy(default_days=500, source_days={"transactions": 400}).longest_days("transactions") == 400
