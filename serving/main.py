"""Creates the app and includes the routers; nothing else."""

from __future__ import annotations

from core import redact
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from core import gctune
from core.config import Settings
from projection.client import connect_async
from serving import errors
from serving.fastpath import SingleKeyFastPath
from serving.limits import MAX_BODY_BYTES, BodyLimit
from serving.metrics import MetricsMiddleware
from serving.routes import availability, drift, health
from serving.store import PositionStore
from projection.keys import generations_of

log = logging.getLogger(__name__)


def create_app(settings: Settings, fast_path: bool = True, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """``fast_path=False`` leaves every request to FastAPI (the reference the fast path is tested against);
    a request body larger than ``max_body_bytes`` is answered 413 (``serving.limits``)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect_async(settings, max_connections=64, socket_timeout=2, socket_connect_timeout=2)
        app.state.store = PositionStore(client, generations_of(settings), cluster=settings.redis_cluster)
        try:
            await client.ping()
        except aioredis.RedisError as exc:  # serve anyway: /readyz and 503s tell clients
            log.warning("redis not reachable at start url=%s error=%s", redact.url(settings.redis_url),
                        redact.text(str(exc)))
        gctune.tune(freeze=True)  # the app, its models and modules are made: keep the collector off them
        yield
        await client.aclose()

    app = FastAPI(
        title="atp-stream availability API",
        version="1.0.0",
        summary="Available-to-promise per item and location, fresh from the event stream.",
        lifespan=lifespan,
    )
    app.state.groups = settings.location_groups
    app.state.ready_heartbeat_s = settings.ready_heartbeat_s
    errors.install(app)
    app.include_router(availability.router)
    app.include_router(drift.router)
    app.include_router(health.router)
    app.state.routes = [r for router in (availability.router, drift.router, health.router) for r in router.routes]
    if fast_path:  # inside the metrics middleware, which then counts its answers too
        app.add_middleware(SingleKeyFastPath)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)  # before anything reads a body
    app.add_middleware(MetricsMiddleware)
    return app


def main_app() -> FastAPI:
    """Factory for ``uvicorn --factory serving.main:main_app``."""
    from core.config import load_settings

    return create_app(load_settings())
