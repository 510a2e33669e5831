"""Creates the app and includes the routers; nothing else."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from core import gctune, redact
from core.config import Settings
from core.errors import ConfigError
from projection.client import connect_async
from projection.keys import generations_of
from serving import docs, errors
from serving.auth.keyring import Keyring
from serving.auth.limiter import Limiter
from serving.auth.middleware import ApiKeyAuth
from serving.fastpath import SingleKeyFastPath
from serving.limits import MAX_BODY_BYTES, BodyLimit
from serving.metrics import MetricsMiddleware
from serving.routes import availability, drift, health
from serving.store import PositionStore

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth(settings: Settings) -> None:
    """Fails fast on an API that would serve every location to anyone who reaches it."""
    if settings.api_auth == "disabled" and not is_loopback(settings.api_host):
        raise ConfigError(f"ATP_API_AUTH=disabled with ATP_API_HOST={settings.api_host}: anyone who reaches that "
                          "address could read every location. Keep ATP_API_AUTH=required and give each channel a "
                          "key (`atp keys create`), or bind a loopback address (ATP_API_HOST=127.0.0.1).")


def create_app(settings: Settings, fast_path: bool = True, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """``fast_path=False`` leaves every request to FastAPI (the reference the fast path is tested against);
    a request body larger than ``max_body_bytes`` is answered 413 (``serving.limits``)."""
    check_auth(settings)
    keyring = Keyring(settings.keys_file, settings.key_secret_file) if settings.api_auth == "required" else None
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect_async(settings, max_connections=64, socket_timeout=2, socket_connect_timeout=2)
        app.state.store = PositionStore(client, generations_of(settings), cluster=settings.redis_cluster)
        app.state.limiter = None if keyring is None else Limiter(client, settings.redis_key_prefix)
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
        docs_url=None, redoc_url=None,  # /docs is served from local assets (serving.docs)
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    app.state.limiter = None
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
    app.add_middleware(ApiKeyAuth, keyring=keyring, public_docs=settings.api_docs)  # before any route or body
    app.add_middleware(MetricsMiddleware, access_log=settings.api_access_log)
    if settings.api_docs:
        docs.install(app)
    if keyring is not None:
        docs.bearer_scheme(app)
    return app


def main_app() -> FastAPI:
    """Factory for ``uvicorn --factory serving.main:main_app``."""
    from core.config import load_settings

    return create_app(load_settings())
