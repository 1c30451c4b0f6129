"""Which replica copy may be trusted for a client's status when the master does not answer."""

from __future__ import annotations

from feature_store.freshness import CopyRead, trusted_copy

WORKING = {"configured": 2, "following": 2, "stopped": 0}


def copy(name: str, vclock: dict[str, int], replication: dict[str, int] | None = None, ro: bool = True) -> CopyRead:
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


def test_a_writable_copy_is_the_master_and_trusted_as_is() -> None:
    master = copy("a", {"1": 3}, {"configured": 2, "following": 0, "stopped": 0}, ro=False)
    assert trusted_copy([copy("b", {"1": 10}), master]) is master
    assert trusted_copy([]) is None


def test_a_sparse_vclock_arriving_as_an_array_is_read_by_position() -> None:
    wire = {"values": [1], "status_gen": 2, "read_at": 5.0, "vclock": [7, 0, 3], "replication": WORKING}
    assert CopyRead.from_wire("b", wire).vclock == {"1": 7, "2": 0, "3": 3}
