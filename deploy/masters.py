"""The local launcher's record of each replica set's master (``run_dir/store/masters.json``), written by
`rtrec failover`: who is master (and with which epoch), and which former masters were deposed.

Instances start read-only unless recorded as master, and a deposed master is rebootstrapped from the current
one before it runs again (its data may hold writes no replica received; reusing it would bring back rows
that conflict with what the new master wrote since). The storages keep their own replicated record with the
same epoch (lua/mastership.lua); this file is what the launcher reads before any instance runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class MasterRecord:
    master: str
    epoch: int = 1
    deposed: list[str] = field(default_factory=list)


class MasterRecords:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def get(self, rs_id: int, default_master: str) -> MasterRecord:
        entry = self._load().get(str(rs_id))
        if isinstance(entry, str):  # the format before epochs: just a name
            return MasterRecord(entry)
        if isinstance(entry, dict) and "master" in entry:
            return MasterRecord(str(entry["master"]), int(entry.get("epoch", 1)), list(entry.get("deposed", [])))
        return MasterRecord(default_master)

    def put(self, rs_id: int, record: MasterRecord) -> None:
        recorded = self._load()
        recorded[str(rs_id)] = {"master": record.master, "epoch": record.epoch, "deposed": record.deposed}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(recorded))
        tmp.replace(self.path)
