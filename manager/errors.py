"""How the API answers failures: every error is a JSON body with a clear message and the request id, never
store internals or a stack trace (those go to the log under the same request id).

- invalid input (schema violations, NaN, numbers or times out of range): 422 with where and what, without
  echoing the offending input (it may be huge, or not even representable in JSON);
- input the store refuses for its content: 409 (a fat or denied subject) or 422 (a rejected value);
- the store unavailable or failing: 503, retry later;
- anything else: 500 with the request id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from feature_store.errors import BadArgument, StoreError, SubjectDenied, SubjectTooFat, TooManyNames

log = logging.getLogger("rtrec.api")

MAX_ERRORS_SHOWN = 10
REFUSALS: dict[type[StoreError], tuple[int, str]] = {
    SubjectTooFat: (409, "the subject has reached its limit of stored features"),
    SubjectDenied: (409, "the subject is not accepted by the store"),
    BadArgument: (422, "the store rejected a value of the request"),
    TooManyNames: (422, "the store holds as many distinct feature names as it accepts; use an existing name"),
}


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def _body(request: Request, detail: Any) -> dict[str, Any]:
    return {"detail": detail, "request_id": request_id(request)}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))[:300]}
            for error in exc.errors()[:MAX_ERRORS_SHOWN]
        ]
        return JSONResponse(_body(request, problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(_body(request, exc.detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        for kind, (status, message) in REFUSALS.items():
            if isinstance(exc, kind):
                log.info("request %s refused by the store: %s: %s", request_id(request), type(exc).__name__, exc)
                return JSONResponse(_body(request, message), status_code=status)
        log.warning("request %s: store failure: %s: %s", request_id(request), type(exc).__name__, exc)
        message = "the feature store is unavailable; retry later"
        return JSONResponse(_body(request, message), status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s failed", request_id(request), exc_info=exc)
        # this handler answers from Starlette's outermost middleware, outside RequestIdMiddleware: the header
        # the other answers get from it is set here
        return JSONResponse(
            _body(request, "internal error; quote the request id"),
            status_code=500,
            headers={"X-Request-ID": request_id(request)},
        )
