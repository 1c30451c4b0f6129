"""The mobile backend's one hot request, answered without the framework's per-request machinery.

A py-spy profile of an API worker at 1,000 requests/s (docs/benchmarks.md) put 12 % of its CPU in the
recommendation itself and more than 40 % in FastAPI around it: routing, dependency solving (which builds a
``typing.Callable`` alias per dependency per request), response validation and the exception layers. This plain
ASGI layer answers ``GET /v1/recommendations/{client_id}`` when everything about the request is valid: a
bearer key whose role may read, an id FastAPI's pattern accepts, no query parameter but an optional ``limit``
in 1..50. Anything else goes on to the FastAPI route unchanged, so every error answer (401, 403, 422), the
OpenAPI schema and what the fuzz tests check stay FastAPI's; the answer carries the same fields as the route's
response model (tests/integration/test_recommendations.py compares both).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import orjson

from manager.auth import PERMISSIONS, role_of
from manager.metrics import FAST_LANE_ANSWERS
from manager.recommendations_api import Recommendation, RecommendationsResponse

ROUTE_PATH = "/v1/recommendations/{client_id}"
_PATH = re.compile(r"/v1/recommendations/([A-Za-z0-9_.:\-]{1,64})")
_ANSWER_FIELDS = tuple(RecommendationsResponse.model_fields)
_ITEM_FIELDS = tuple(Recommendation.model_fields)
_HEADERS = [(b"content-type", b"application/json")]
_ROUTE = SimpleNamespace(path=ROUTE_PATH)


class RecommendationFastLane:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        client_id = self._admitted(scope)
        if client_id is None:
            await self.app(scope, receive, send)
            return
        limit = _limit(scope.get("query_string", b""))
        if limit == 0:
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE  # latency metrics label the request by its route path, as FastAPI's would be
        answer = await scope["app"].state.recommendations.recommend(
            client_id, limit, started=scope.get("state", {}).get("started")
        )
        body = orjson.dumps(
            {
                **{field: answer.get(field) for field in _ANSWER_FIELDS},
                "items": [{field: item[field] for field in _ITEM_FIELDS} for item in answer["items"]],
            }
        )
        FAST_LANE_ANSWERS.inc()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _admitted(scope: dict[str, Any]) -> str | None:
        """The client id of a GET of the recommendations path with a key allowed to read, else None."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        match = _PATH.fullmatch(scope["path"])  # fullmatch: "$" would also match before a final newline
        if match is None:
            return None
        authorization = next((v for k, v in scope.get("headers") or () if k == b"authorization"), None)
        if authorization is None:
            return None
        scheme, _, key = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        role = role_of(scope["app"].state.settings.api.keys, key)
        if role is None or "read" not in PERMISSIONS.get(role, frozenset()):
            return None
        return match.group(1)


def _limit(query_string: bytes) -> int | None:
    """None without parameters, the limit when ``limit`` is the only one and a whole number in 1..50, else 0
    (the request goes to FastAPI, which validates and answers as it always did)."""
    if not query_string:
        return None
    params = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if (
        len(params) != 1
        or params[0][0] != "limit"
        or not params[0][1].isascii()
        or not params[0][1].isdigit()
        or len(params[0][1]) > 4
    ):
        return 0
    limit = int(params[0][1])
    return limit if 1 <= limit <= 50 else 0
