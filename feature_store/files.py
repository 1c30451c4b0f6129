"""Small files the stack's processes share (consumer status, the supervisor's state, the master records, replay
progress): each written whole or not at all, so a reader in another process never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``. ``durable``: synced to
    disk first, so a power cut leaves the old file or the new one, never an empty one. A failed write leaves
    no temporary file behind and raises."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
