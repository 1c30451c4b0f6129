"""Which replica copy may be trusted for a client's status when the master does not answer."""

from __future__ import annotations

from feature_store.freshness import CopyRead, trusted_copy

WORKING: dict[str, float] = {"configured": 2, "following": 2, "stopped": 0, "max_lag": 0.01}


def copy(name: str, vclock: dict[str, int], replication: dict[str, float] | None = None, ro: bool = True) -> CopyRead:
    return CopyRead(name, [], 0, 0.0, ro=ro, vclock=vclock, replication=replication or WORKING)


def test_the_copy_that_has_every_row_others_have_wins() -> None:
    behind, ahead = copy("b", {"1": 10}), copy("c", {"1": 12})
    assert trusted_copy([behind, ahead]) is ahead


def test_no_copy_covers_all_when_each_has_rows_the_other_lacks() -> None:
    assert trusted_copy([copy("b", {"1": 10, "2": 5}), copy("c", {"1": 9, "2": 7})]) is None


def test_a_copy_with_replication_off_stopped_or_following_nobody_is_not_trusted() -> None:
    assert trusted_copy([copy("b", {"1": 10}, {"configured": 0, "following": 0, "stopped": 0})]) is None
    assert trusted_copy([copy("b", {"1": 10}, {"configured": 2, "following": 1, "stopped": 1})]) is None
    assert trusted_copy([copy("b", {"1": 10}, {"configured": 2, "following": 0, "stopped": 0})]) is None
    lone = copy("b", {"1": 10}, {"configured": 2, "following": 1, "stopped": 0})  # the master died, b follows c
    assert trusted_copy([lone]) is lone


def test_a_writable_copy_gets_no_special_trust() -> None:
    stale_writable = copy("a", {"1": 500}, ro=False)  # a deposed master started writable by mistake
    fresh = copy("b", {"1": 500, "2": 40})
    assert trusted_copy([stale_writable, fresh]) is fresh
    assert trusted_copy([]) is None


def test_a_following_replica_seconds_behind_is_not_fresh() -> None:
    assert (
        trusted_copy([copy("b", {"1": 10}, {"configured": 2, "following": 2, "stopped": 0, "max_lag": 30.0})]) is None
    )


def test_a_sparse_vclock_arriving_as_an_array_is_read_by_position() -> None:
    wire = {"values": [1], "status_gen": 2, "read_at": 5.0, "vclock": [7, 0, 3], "replication": WORKING}
    assert CopyRead.from_wire("b", wire).vclock == {"1": 7, "2": 0, "3": 3}
