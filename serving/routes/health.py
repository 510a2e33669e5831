"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import redis.exceptions
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import StoreDep
from serving.errors import ApiError
from serving.metrics import exposition

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis is reachable and its keyspace complete",
            responses={503: {"description": "Redis unreachable, or the keyspace missing or being re-published"}})
async def readyz(store: StoreDep) -> dict[str, str]:
    try:
        await store.ping()
    except redis.exceptions.RedisError as exc:
        raise ApiError(503, "store_unavailable", f"Redis unreachable: {type(exc).__name__}: {exc}") from None
    return {"status": "ready", "generation": await store.check_ready()}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
