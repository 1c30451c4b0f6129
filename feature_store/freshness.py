"""Which copy of a replica set may be trusted for a client's status when the master does not answer (pure).

Replication is asynchronous, so a replica may be behind: serving holdings and applications from a replica
that missed an application would offer the client the product he just applied for. A replica's answer is
used only when the replica shows that no copy we heard from is ahead of it, and that its replication works:

- its vclock covers the vclock of every other copy that answered (it has every row they have);
- it follows at least one peer (``following >= 1``) and no upstream stopped on an error (``stopped == 0``):
  a replica cut off from everyone, or with replication off or broken, may be arbitrarily behind;
- the rows it receives arrive within ``MAX_REPLICATION_LAG_S`` of being written (a replica that follows but
  has fallen seconds behind is not fresh).

A writable copy gets no special trust: a master answers this read only when the client took another
instance for the master, and a deposed master started writable by mistake must not win over fresh replicas.

What remains possible (and documented in docs/operations.md): rows the master wrote in the last moments
before it stalled or died, which no replica received yet. Asynchronous replication loses them for the store
too until a replay; the answer is as fresh as any surviving copy can be. A master cut off from its replicas
while still reached by its writers is bounded the same way: the write lease (lua/mastership.lua) stops its
client data writes about 4 s after too few replicas follow it, and later events wait in Kafka as they do
while a dead master awaits its failover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_REPLICATION_LAG_S = 1.0


@dataclass(frozen=True)
class CopyRead:
    """One instance's answer to ``client_read``."""

    instance: str
    values: list[Any]
    status_gen: str
    read_at: float
    ro: bool = True
    vclock: dict[str, int] = field(default_factory=dict)
    replication: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, instance: str, answer: dict[str, Any]) -> CopyRead:
        vclock = answer.get("vclock") or {}
        if isinstance(vclock, list):  # an array when the ids happen to be 1..n
            vclock = {str(i): lsn for i, lsn in enumerate(vclock, start=1)}
        return cls(
            instance=instance,
            values=list(answer["values"]),
            status_gen=str(answer.get("status_gen") or ""),
            read_at=float(answer["read_at"]),
            ro=bool(answer.get("ro", True)),
            vclock={str(k): int(v) for k, v in vclock.items()},
            replication=dict(answer.get("replication") or {}),
        )


def covers(vclock: dict[str, int], other: dict[str, int]) -> bool:
    return all(vclock.get(component, 0) >= lsn for component, lsn in other.items())


def trusted_copy(copies: Sequence[CopyRead]) -> CopyRead | None:
    """The copy to serve a client's status from, or None when none can be trusted."""
    newest: dict[str, int] = {}
    for copy in copies:
        for component, lsn in copy.vclock.items():
            newest[component] = max(newest.get(component, 0), lsn)
    for copy in sorted(copies, key=lambda c: -sum(c.vclock.values())):
        replication = copy.replication
        working = replication.get("following", 0) >= 1 and replication.get("stopped", 0) == 0
        working = working and replication.get("max_lag", 0.0) <= MAX_REPLICATION_LAG_S
        if working and covers(copy.vclock, newest):
            return copy
    return None
