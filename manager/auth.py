"""Bearer API keys with roles from config (``[api.keys]``). A role grants permissions, and each endpoint
needs one; nothing is granted by rank, so a role holds exactly what its users need:

- ``reader`` (the mobile banking backend): recommendations and feature reads;
- ``writer`` (HTTP producers): reads and feature writes;
- ``operator`` (ops): reads, writes, replays;
- ``scorer`` (a collaborative-filtering scorer): the client x product matrix only, which holds every client's
  holdings and is no business of the mobile backend.

Keys are compared in constant time; a rejected key is logged by a short fingerprint, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger("rtrec.auth")

PERMISSIONS: dict[str, frozenset[str]] = {
    "reader": frozenset({"read"}),
    "writer": frozenset({"read", "write"}),
    "operator": frozenset({"read", "write", "operate"}),
    "scorer": frozenset({"interactions"}),
}

_bearer = HTTPBearer(auto_error=False)


def role_of(keys: dict[str, str], presented: str) -> str | None:
    """The role of ``presented``, comparing it with every configured key in constant time."""
    presented_bytes = presented.encode("utf-8", errors="replace")
    found = None
    for key, role in keys.items():
        if hmac.compare_digest(key.encode(), presented_bytes):
            found = role
    return found


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="replace")).hexdigest()[:12]


def require(permission: str) -> Callable[..., Coroutine[Any, Any, str]]:
    """Dependency that admits keys whose role grants ``permission``; returns the caller's role."""
    roles_with_it = sorted(role for role, granted in PERMISSIONS.items() if permission in granted)

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer API key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        caller = role_of(request.app.state.settings.api.keys, credentials.credentials)
        if caller is None:
            client = request.client.host if request.client else "?"
            log.warning(
                "rejected API key %s from %s for %s", fingerprint(credentials.credentials), client, request.url.path
            )
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if permission not in PERMISSIONS.get(caller, frozenset()):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this endpoint needs a key of role {' or '.join(roles_with_it)}; the key's role is {caller}",
            )
        return caller

    return check


Reader = Annotated[str, Depends(require("read"))]
Writer = Annotated[str, Depends(require("write"))]
Operator = Annotated[str, Depends(require("operate"))]
Scorer = Annotated[str, Depends(require("interactions"))]
