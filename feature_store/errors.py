"""Typed errors of the feature store client. Storage error codes (lua/errors.lua) map one to one."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base class. ``retriable`` tells retry loops whether trying again can help; ``refuses_input`` says the
    input itself was refused (the same request will never pass: a 4xx for HTTP, a dead letter for a consumer)
    rather than the store failing (which a consumer holds and retries)."""

    retriable = False
    refuses_input = False
    code = 0

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class WrongBucket(StoreError):
    """The replica set does not own (or is moving) the bucket: refresh the bucket map and retry."""

    retriable = True
    code = 1


class SubjectTooFat(StoreError):
    """The subject reached its feature cap; its new features are refused."""

    refuses_input = True
    code = 2


class ReadOnlyInstance(StoreError):
    """The instance called as master is read-only (a failover happened): rediscover the master and retry."""

    retriable = True
    code = 3


class BadArgument(StoreError):
    """The storage rejected the arguments (a malformed row)."""

    refuses_input = True
    code = 4


class SubjectDenied(StoreError):
    """The subject is on the deny list (e.g. the bank itself)."""

    refuses_input = True
    code = 5


class BucketStateError(StoreError):
    code = 6


class TooManyNames(StoreError):
    """The replica set holds ``store.max_names`` distinct feature names; rows under a new one are refused (a
    producer inventing names, such as a new product id on every event)."""

    refuses_input = True
    code = 9


class Fenced(StoreError):
    """A newer consumer group generation already wrote for one of the write's Kafka partitions: this writer lost
    them (``fields``: ``refused``, each refused key with its stored generation; key, stored, generation of the
    first). Nothing of the call was written."""

    code = 10


class NoFollowingReplica(StoreError):
    """Too few replicas follow the master, so it takes no client data (the write lease, lua/mastership.lua):
    written there, rows would be missed by replicas serving reads. Retrying passes once they follow again."""

    retriable = True
    code = 11


class StoreInternalError(StoreError):
    code = 7


class StoreOutOfMemory(StoreError):
    """The instance reached its memtx memory limit. Nothing of the request was written; retrying passes once
    memory is freed (expiry) or added (a restart with a larger ``memtx_memory_mb``)."""

    retriable = True
    code = 8


class AccessDenied(StoreError):
    """The store user may not call this procedure (its role does not grant it): a configuration error."""


class StoreUnavailable(StoreError):
    """No instance of a replica set answered (network, restart, no master)."""

    retriable = True


class NoOwner(StoreUnavailable):
    """The bucket map names no replica set for the bucket: in a move between `sent` and activation, or its
    replica set did not answer when the map was read."""


class StoreTimeout(StoreError):
    """The deadline passed before the store answered."""

    retriable = True


_BY_CODE: dict[int, type[StoreError]] = {
    cls.code: cls
    for cls in (
        WrongBucket,
        SubjectTooFat,
        ReadOnlyInstance,
        BadArgument,
        SubjectDenied,
        BucketStateError,
        StoreInternalError,
        StoreOutOfMemory,
        TooManyNames,
        Fenced,
        NoFollowingReplica,
    )
}


def from_storage(err: dict[str, Any]) -> StoreError:
    """Turn a storage error table ``{code, name, message, ...}`` into its exception."""
    cls = _BY_CODE.get(int(err.get("code", 7)), StoreInternalError)
    fields = {k: v for k, v in err.items() if k not in ("code", "name", "message", "retriable")}
    return cls(str(err.get("message", err.get("name", "storage error"))), **fields)
