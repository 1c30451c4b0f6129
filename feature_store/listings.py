"""Whole-store listings for training and the collaborative scorer: every subject, and who holds or applied for
which product. Paged per replica set (reads, not the hot path)."""

from __future__ import annotations

from feature_store.client import FeatureStore


async def list_subjects(store: FeatureStore, page: int = 1000) -> list[str]:
    """Every stored subject, from all replica sets, once each. Each lists the subjects of the buckets it owns;
    a bucket that moves while the replica sets are listed one after the other could still show on both (it is
    kept once) or, moving towards one already listed, on neither (that client sits out this listing)."""
    subjects: dict[str, None] = {}
    for rs in store.replicasets.values():
        after = None
        while True:
            answer = await rs.call("list_subjects", [after, page], write=False)
            subjects.update(dict.fromkeys(answer["subjects"]))
            after = answer["next_after"]
            if after is None:
                break
    return list(subjects)


async def interactions(store: FeatureStore, page: int = 1000) -> list[tuple[str, str, str]]:
    """(subject, product, "held" | "applied") for every client, from all replica sets."""
    rows: list[tuple[str, str, str]] = []
    for rs in store.replicasets.values():
        after = None
        while True:
            answer = await rs.call("interactions", [after, page], write=False, timeout=60.0)
            rows.extend((r[0], r[1], r[2]) for r in answer["rows"])
            if answer["next_after"] is None or answer["next_after"] == after:
                break
            after = answer["next_after"]
    return rows
