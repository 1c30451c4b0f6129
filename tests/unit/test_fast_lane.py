"""Which requests the recommendation fast lane (``manager.fast_lane``) takes: only a valid GET with a key that
may read, a valid id and at most a valid ``limit``; everything else goes to FastAPI, which answers errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from manager.fast_lane import RecommendationFastLane, _limit

KEYS = {"r-key": "reader", "w-key": "writer", "s-key": "scorer"}


def scope(path: str = "/v1/recommendations/c1", method: str = "GET", auth: bytes | None = b"Bearer r-key") -> Any:
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(api=SimpleNamespace(keys=KEYS))))
    headers = [(b"host", b"x")] + ([(b"authorization", auth)] if auth is not None else [])
    return {"type": "http", "method": method, "path": path, "headers": headers, "app": app}


@pytest.mark.parametrize(
    ("request_scope", "admitted"),
    [
        (scope(), "c1"),
        (scope(auth=b"bearer w-key"), "c1"),  # any role that may read; the scheme in any case
        (scope(path="/v1/recommendations/a.b:c-d_9"), "a.b:c-d_9"),
        (scope(auth=b"Bearer s-key"), None),  # the scorer role may not read recommendations: FastAPI's 403
        (scope(auth=b"Bearer nope"), None),  # unknown key: FastAPI's 401
        (scope(auth=None), None),
        (scope(auth=b"Basic r-key"), None),
        (scope(auth=b"Bearer "), None),
        (scope(method="POST"), None),
        (scope(path="/v1/recommendations/bad id!"), None),  # FastAPI's 422
        (scope(path="/v1/recommendations/" + "x" * 65), None),
        (scope(path="/v1/recommendations/c1/more"), None),
        (scope(path="/v1/recommendations/c1\n"), None),  # "$" alone would take it: FastAPI's 422
        (scope(path="/v1/features/c1"), None),
        ({"type": "lifespan"}, None),
    ],
)
def test_only_valid_reads_are_admitted(request_scope: Any, admitted: str | None) -> None:
    assert RecommendationFastLane._admitted(request_scope) == admitted


@pytest.mark.parametrize(
    ("query", "limit"),
    [
        (b"", None),
        (b"limit=3", 3),
        (b"limit=50", 50),
        (b"limit=05", 5),
        (b"limit=0", 0),
        (b"limit=51", 0),
        (b"limit=-1", 0),
        (b"limit=abc", 0),
        (b"limit=%C2%B2", 0),  # a non-ASCII digit
        (b"limit=", 0),
        (b"limit=3&limit=4", 0),
        (b"limit=3&x=1", 0),
        (b"x=1", 0),
        (b"limit=" + b"1" * 5000, 0),  # int() refuses over 4,300 digits: this was a 500
    ],
)
def test_a_limit_other_than_a_whole_number_in_range_goes_to_fastapi(query: bytes, limit: int | None) -> None:
    assert _limit(query) == limit
