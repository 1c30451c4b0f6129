"""Typed errors of the feature store client. Storage error codes (lua/errors.lua) map one to one."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base class. ``retriable`` tells retry loops whether trying again can help."""

    retriable = False
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

    code = 2


class ReadOnlyInstance(StoreError):
    """The instance called as master is read-only (a failover happened): rediscover the master and retry."""

    retriable = True
    code = 3


class BadArgument(StoreError):
    code = 4


class SubjectDenied(StoreError):
    """The subject is on the deny list (e.g. the bank itself)."""

    code = 5


class BucketStateError(StoreError):
    code = 6


class StoreInternalError(StoreError):
    code = 7


class StoreUnavailable(StoreError):
    """No instance of a replica set answered (network, restart, no master)."""

    retriable = True


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
    )
}


def from_storage(err: dict[str, Any]) -> StoreError:
    """Turn a storage error table ``{code, name, message, ...}`` into its exception."""
    cls = _BY_CODE.get(int(err.get("code", 7)), StoreInternalError)
    fields = {k: v for k, v in err.items() if k not in ("code", "name", "message", "retriable")}
    return cls(str(err.get("message", err.get("name", "storage error"))), **fields)
