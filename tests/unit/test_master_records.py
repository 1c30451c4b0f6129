"""The launcher's record of each replica set's master (``deploy.masters``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from deploy.masters import MasterRecord, MasterRecords
from deploy.processes import ProcessError


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\\xff"])
def test_an_unreadable_record_is_refused_not_taken_for_no_failover(tmp_path: Path, content: str) -> None:
    """Read as "no failover yet", it started each replica set's first instance writable: after a failover,
    the deposed master, with writes no replica received."""
    path = tmp_path / "masters.json"
    path.write_text(content)
    with pytest.raises(ProcessError, match=r"masters\.json"):
        MasterRecords(path).get(1, "storage-1-a")
    assert MasterRecords(tmp_path / "none.json").get(1, "storage-1-a") == MasterRecord("storage-1-a")


def test_failovers_of_two_replica_sets_at_once_both_stay_recorded(tmp_path: Path) -> None:
    records = MasterRecords(tmp_path / "masters.json")

    def fail_over(rs_id: int) -> None:
        for epoch in range(2, 40):
            records.put(rs_id, MasterRecord(f"storage-{rs_id}-b", epoch))

    threads = [threading.Thread(target=fail_over, args=(rs_id,)) for rs_id in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for rs_id in (1, 2, 3):
        assert records.get(rs_id, "x") == MasterRecord(f"storage-{rs_id}-b", 39)


def test_a_rebootstrap_strikes_its_name_from_the_record_as_it_is_then(tmp_path: Path) -> None:
    """`rtrec up` rebootstrapping a deposed master read the record, then wrote it back without that name: a
    failover recorded in between was overwritten, and the next start took the old master for the master."""
    records = MasterRecords(tmp_path / "masters.json")
    records.put(1, MasterRecord("storage-1-b", 2, ["storage-1-a"]))
    records.put(1, MasterRecord("storage-1-c", 3, ["storage-1-a", "storage-1-b"]))  # a failover meanwhile
    records.undepose(1, "storage-1-a", "storage-1-a")
    assert records.get(1, "storage-1-a") == MasterRecord("storage-1-c", 3, ["storage-1-b"])
