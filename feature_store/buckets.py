"""vshard's bucket rule: ``bucket_id = digest.crc32(subject) % bucket_count + 1``.

Tarantool's ``digest.crc32`` is CRC-32C (Castagnoli) without the final bit inversion, so in Python it is
``crc32c(s) ^ 0xFFFFFFFF`` (``digest.crc32('abc') == 3384066120``). Using the same rule means a vshard router
would place every record exactly where this client does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from crc32c import crc32c


def tarantool_crc32(text: str) -> int:
    return crc32c(text.encode("utf-8")) ^ 0xFFFFFFFF


def bucket_id_for(subject: str, bucket_count: int) -> int:
    return tarantool_crc32(subject) % bucket_count + 1


def even_bucket_ranges(bucket_count: int, replicaset_ids: Sequence[int]) -> dict[int, list[int]]:
    """Bootstrap assignment: contiguous, nearly equal bucket ranges per replica set."""
    n = len(replicaset_ids)
    assignment: dict[int, list[int]] = {}
    start = 1
    for position, rs_id in enumerate(replicaset_ids):
        size = bucket_count // n + (1 if position < bucket_count % n else 0)
        assignment[rs_id] = list(range(start, start + size))
        start += size
    return assignment


def invert(assignment: dict[int, Iterable[int]]) -> dict[int, int]:
    """Replica set -> buckets becomes bucket -> replica set."""
    return {bucket: rs_id for rs_id, buckets in assignment.items() for bucket in buckets}
