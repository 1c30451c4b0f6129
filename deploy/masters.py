"""The local launcher's record of each replica set's master (``run_dir/store/masters.json``), written by
`rtrec failover`: who is master (and with which epoch), and which former masters were deposed.

Instances start read-only unless recorded as master, and a deposed master is rebootstrapped from the current
one before it runs again (its data may hold writes no replica received; reusing it would bring back rows
that conflict with what the new master wrote since). The storages keep their own replicated record with the
same epoch (lua/mastership.lua); this file is what the launcher reads before any instance runs.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.processes import ProcessError
from feature_store.files import write_atomically


@dataclass
class MasterRecord:
    master: str
    epoch: int = 1
    deposed: list[str] = field(default_factory=list)


class MasterRecords:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        """The records; none before the first failover. A file that cannot be read is refused: taken for "no
        failover yet", it started each replica set's first instance writable, a deposed master among them."""
        try:
            loaded = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as exc:
            raise ProcessError(
                f"{self.path} cannot be read ({exc}): it says which instance is each replica set's master. Restore "
                "it, or write the masters the storages record (`rtrec status` shows who is writable)"
            ) from exc
        if not isinstance(loaded, dict):
            raise ProcessError(f"{self.path} holds no records (an object of replica set ids was expected)")
        return loaded

    def get(self, rs_id: int, default_master: str) -> MasterRecord:
        entry = self._load().get(str(rs_id))
        if isinstance(entry, str):  # the format before epochs: just a name
            return MasterRecord(entry)
        if isinstance(entry, dict) and "master" in entry:
            return MasterRecord(str(entry["master"]), int(entry.get("epoch", 1)), list(entry.get("deposed", [])))
        return MasterRecord(default_master)

    def put(self, rs_id: int, record: MasterRecord) -> None:
        """Record one replica set's master; two failovers at once (of different replica sets) both stay."""
        with self._locked():
            self._write(rs_id, record)

    def undepose(self, rs_id: int, name: str, default_master: str) -> None:
        """Strike ``name`` from the deposed (it was rebootstrapped), on the record as it is now: read and written
        under the lock, so a failover recorded meanwhile is not overwritten with the record read before it."""
        with self._locked():
            record = self.get(rs_id, default_master)
            if name in record.deposed:
                record.deposed.remove(name)
                self._write(rs_id, record)

    def _write(self, rs_id: int, record: MasterRecord) -> None:
        recorded = self._load()
        recorded[str(rs_id)] = {"master": record.master, "epoch": record.epoch, "deposed": record.deposed}
        write_atomically(self.path, json.dumps(recorded).encode(), durable=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
