"""Bearer API keys with roles from config (``[api.keys]``): reader < writer < operator."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ROLE_RANK = {"reader": 1, "writer": 2, "operator": 3}

_bearer = HTTPBearer(auto_error=False)


def require_role(role: str) -> Callable[..., Coroutine[Any, Any, str]]:
    """Dependency that admits keys whose role is ``role`` or higher; returns the caller's role."""
    needed = ROLE_RANK[role]

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
        keys: dict[str, str] = request.app.state.settings.api.keys
        caller = keys.get(credentials.credentials)
        if caller is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if ROLE_RANK[caller] < needed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this endpoint needs the {role} role; the key is {caller}")
        return caller

    return check


Reader = Annotated[str, Depends(require_role("reader"))]
Writer = Annotated[str, Depends(require_role("writer"))]
Operator = Annotated[str, Depends(require_role("operator"))]
