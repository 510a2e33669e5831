"""Error bodies: every error is ``{"error": {"code": ..., "message": ..., "details"?: ...}}``."""

from __future__ import annotations

from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.store import KeyspaceNotReady, UnknownGeneration


class ApiError(Exception):
    """An error answered with a structured body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(first['loc'][1:]) or 'request'}: {first['msg']}"
        return JSONResponse(body("invalid_request", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code)

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
        return JSONResponse(
            body("store_unavailable", f"the position store (Redis) is unavailable: {type(exc).__name__}"),
            status_code=503,
            headers={"Retry-After": "1"},
        )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown key (not_found), or an unknown or retired ?generation= "
                         "(generation_not_found, generation_retired)", "content": {"application/json": {"example": body("not_found", "...")}}},
    422: {"description": "Invalid request", "content": {"application/json": {"example": body("invalid_request", "...")}}},
    503: {"description": "Redis unavailable (store_unavailable), or the keyspace is being re-published "
                         "(rebuilding) or missing (keyspace_missing)",
          "content": {"application/json": {"example": body("store_unavailable", "...")}}},
}
