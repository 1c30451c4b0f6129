"""Which caller-given ``X-Request-ID`` values the API keeps (``manager.middleware``): a sane one is echoed in
logs, error bodies and the response header, anything else is replaced by a fresh id."""

from __future__ import annotations

import pytest

from manager.middleware import SAFE_REQUEST_ID


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"abc-123_x.y", True),
        (b"x" * 64, True),
        (b"x" * 65, False),
        (b"", False),
        (b"abc\n", False),  # "$" alone matches before a final newline; a header value must not carry one
        (b"abc\r\nSet-Cookie: x", False),
        (b"a b", False),
    ],
)
def test_only_sane_request_ids_are_kept(given: bytes, kept: bool) -> None:
    assert (SAFE_REQUEST_ID.fullmatch(given) is not None) == kept


async def test_an_internal_error_answers_with_the_request_id_header_too() -> None:
    """The catch-all handler answers from Starlette's outermost middleware, outside the one that adds the
    header: a 500 carried the id in its body only, where 4xx answers had it in both."""
    import httpx
    from fastapi import FastAPI

    from manager.errors import install_error_handlers
    from manager.middleware import RequestIdMiddleware

    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/boom", headers={"X-Request-ID": "abc123"})
        missing = await client.get("/nowhere", headers={"X-Request-ID": "def456"})
    assert answer.status_code == 500 and answer.json()["request_id"] == "abc123"
    assert answer.headers.get("x-request-id") == "abc123"
    assert missing.status_code == 404 and missing.headers.get("x-request-id") == "def456"
