"""Plain ASGI middlewares (Starlette's BaseHTTPMiddleware costs far more per request): a request id on every
request and response, and a cap on request body sizes (413 before the body is read into memory)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from fastapi import HTTPException

SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._\-]{1,64}")


class RequestIdMiddleware:
    """Takes a sane ``X-Request-ID`` from the caller or makes one; logs and error bodies quote it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        request_id = given.decode() if SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """413 for a declared ``Content-Length`` over the limit, and for a streamed body that grows past it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(send, scope)
            return
        received = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body: FastAPI turns this into the 413 response
                    raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _too_large(self, send: Any, scope: dict[str, Any]) -> None:
        request_id = scope.get("state", {}).get("request_id", "-")
        body = orjson.dumps({"detail": f"request body larger than {self.max_bytes} bytes", "request_id": request_id})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
