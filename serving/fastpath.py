"""The hot read, ``GET /v1/availability/{sku}/{location}``, answered beside FastAPI's routing.

Sales channels call this once per product page; it is most of the API's traffic. Through FastAPI
a request spent more of its CPU in routing, dependency injection and response validation than in
reading Redis. This ASGI middleware answers the common case itself, from the same store and the
same response model, so the body is the one the route would give. Everything else goes on to
FastAPI unchanged: other paths, a query string (``?generation=``), an id the route would refuse
(422), an unknown key (404), an unreadable stored position (503), a keyspace that is not ready or a Redis error (503). The route stays
the documented one (OpenAPI) and the reference the tests compare this path with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from projection.codec import Unreadable
from serving.auth.middleware import key_of
from serving.models import ID_PATTERN, Availability
from serving.routes.availability import GENERATION_HEADER, now_ms, router
from serving.store import KeyspaceNotReady

TEMPLATE = router.prefix + "/{sku}/{location}"
_ID = ID_PATTERN.removeprefix("^").removesuffix("$")
_PATH = re.compile(f"{re.escape(router.prefix)}/({_ID})/({_ID})")
_HEADER = GENERATION_HEADER.lower().encode()


@dataclass(frozen=True)
class _Route:
    path: str  # what serving.metrics labels a request with, as it reads a matched route's


_ROUTE = _Route(TEMPLATE)


class SingleKeyFastPath:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            match = _PATH.fullmatch(scope["path"])
            key = key_of(scope)
            if match is not None and (key is None or key.sees(match.group(2))):  # else the route's 403
                answer = await _read(scope["app"].state.store, match.group(1), match.group(2))
                if answer is not None:
                    scope["route"] = _ROUTE
                    body, generation = answer
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"),
                        (_HEADER, generation.encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


async def _read(store: Any, sku: str, location: str) -> tuple[bytes, str] | None:
    """The 200 body and the generation, or None for any other answer (FastAPI gives that one)."""
    try:
        read = await store.get_one(sku, location)
    except (KeyspaceNotReady, redis.exceptions.RedisError):
        return None
    stored = read.results[0]
    if stored is None or isinstance(stored, Unreadable):  # the route answers 404 / 503 position_unreadable
        return None
    return Availability.from_stored(stored, now_ms(), read.watermark).model_dump_json().encode(), read.generation
