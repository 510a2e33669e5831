"""Error bodies: every error is ``{"error": {"code": ..., "message": ..., "details"?: ...}}``."""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from projection.codec import Unreadable
from serving.models import ErrorBody
from serving.store import KeyspaceNotReady, UnknownGeneration

log = logging.getLogger(__name__)

# A stored record the API cannot serve does not fix itself within a second: the dataflow rewrites
# the key on its next event, or an operator repairs or rebuilds it.
UNREADABLE_RETRY_AFTER_S = 30


class ApiError(Exception):
    """An error answered with a structured body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers


def unreadable(what: str, exc: Unreadable, details: dict[str, Any]) -> ApiError:
    """The 503 for a read whose one answer is a stored record that cannot be served."""
    return ApiError(503, "position_unreadable", f"the stored position of {what} cannot be served: {exc.reason}",
                    {**details, "reason": exc.reason}, headers={"Retry-After": str(UNREADABLE_RETRY_AFTER_S)})


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return JSONResponse(body("malformed_body", "the request body is not valid JSON", details), status_code=400)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(first['loc'][1:]) or 'request'}: {first['msg']}"
        return JSONResponse(body("invalid_request", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = MALFORMED if exc.status_code == 400 else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path (a path can have a route per method)
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(body(code, message), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(KeyspaceNotReady)
    async def _not_ready(_: Request, exc: KeyspaceNotReady) -> JSONResponse:
        code = "rebuilding" if exc.state != "missing" else "keyspace_missing"
        return JSONResponse(body(code, str(exc), {"keyspace_state": exc.state}), status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(UnknownGeneration)
    async def _generation(_: Request, exc: UnknownGeneration) -> JSONResponse:
        code = "generation_retired" if exc.retired else "generation_not_found"
        return JSONResponse(body(code, str(exc), {"generation": exc.name}), status_code=404)

    @app.exception_handler(redis.exceptions.RedisError)
    async def _redis(_: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
        if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("WRONGTYPE"):
            # Not an outage: a key the answer needs (a SKU's location set, the alert index) holds
            # another Redis type. Retrying does not help; the keyspace needs a repair.
            return JSONResponse(body("index_unreadable", INDEX_UNREADABLE), status_code=503)
        return JSONResponse(
            body("store_unavailable", f"the position store (Redis) is unavailable: {type(exc).__name__}"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The last resort (a defect): still the error body, never a text/plain page.
        log.exception("unhandled error while answering a request")
        return JSONResponse(body("internal_error", f"internal error: {type(exc).__name__}"), status_code=500)


def allowed_methods(request: Request) -> list[str]:
    """The methods the app's routes take on the request's path (``app.state.routes``: the routes
    as ``create_app`` included them; a path can have a route per method, e.g. GET and HEAD)."""
    path = request.scope["path"]
    return sorted({m for route in request.app.state.routes if route.path_regex.fullmatch(path)
                   for m in route.methods or ()})


HTTP_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
MALFORMED = "the request body cannot be parsed (it is not UTF-8 JSON)"
INDEX_UNREADABLE = ("a Redis key this answer needs (the generation pointer or meta, a SKU's location set, the "
                    "alert index) holds the wrong type, from a bug or a hand edit: delete that key, or rebuild "
                    "the keyspace with `atp replay` and `atp generation switch`")


def _error(description: str, code: str) -> dict[str, Any]:
    return {"description": description, "model": ErrorBody,
            "content": {"application/json": {"example": body(code, "...")}}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: _error("Unknown key (not_found), or an unknown or retired ?generation= "
                "(generation_not_found, generation_retired)", "not_found"),
    422: _error("Invalid request (invalid_request)", "invalid_request"),
    503: _error("Redis unavailable (store_unavailable), or the keyspace is being re-published "
                "(rebuilding) or missing (keyspace_missing), or the one stored record the answer "
                "needs cannot be served (position_unreadable), or an index it needs holds the wrong "
                "Redis type (index_unreadable)", "store_unavailable"),
}
# Routes that take a request body also answer these.
BODY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The body is not valid JSON or not UTF-8 (malformed_body)", "malformed_body"),
    413: _error("The body is larger than the limit (body_too_large)", "body_too_large"),
}
