"""Every request but the health checks shows a key with the scope of its route, within its rate.

An ASGI middleware in front of the routes (and of the single-key fast path), so nothing reaches a
route unauthenticated. It answers 401 (no token, or one that is unknown, rotated out or expired: the
caller cannot tell which) with ``WWW-Authenticate: Bearer``, 403 ``forbidden`` (a valid key without
the route's scope), or 429 ``rate_limited`` with ``Retry-After``; allowed answers carry the
RateLimit headers of the key's bucket. The key goes on to the routes in the ASGI scope
(``atp.key``), where location limits apply (``serving.deps.KeyDep``).
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import Counter

from serving.auth import AVAILABILITY_READ, DRIFT_READ, METRICS_READ, ApiKey
from serving.auth.keyring import Keyring
from serving.auth.limiter import Limiter, Verdict
from serving.errors import body

KEY_SCOPE = "atp.key"  # the ASGI scope entry that carries the caller's key
PUBLIC = frozenset({"/healthz", "/readyz"})
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
DENIED = Counter("atp_api_denied_total", "API requests refused before a route, by reason.", ["reason"])


def required_scope(path: str) -> str | None:
    """The scope a path needs; None: any valid key (an unknown path then answers 404 to it)."""
    if path.startswith("/v1/availability"):
        return AVAILABILITY_READ
    if path.startswith("/v1/drift"):
        return DRIFT_READ
    if path == "/metrics":
        return METRICS_READ
    return None


def bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else ""
    return None


class ApiKeyAuth:
    def __init__(self, app: Any, keyring: Keyring | None, public_docs: bool = True) -> None:
        """``keyring`` None: auth disabled (every request passes, with no key). The limiter is the
        app's (``app.state.limiter``, made with the Redis client at start; None: no limits)."""
        self.app, self.keyring = app, keyring
        self.public = PUBLIC | DOCS if public_docs else PUBLIC
        self.public_docs = public_docs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or self.keyring is None or scope["path"] in self.public
                or (self.public_docs and scope["path"].startswith("/docs/assets/"))):
            await self.app(scope, receive, send)
            return
        token = bearer(scope)
        key = self.keyring.lookup(token) if token else None
        if key is None:
            DENIED.labels("unauthenticated").inc()
            challenge = 'Bearer realm="atp"' + (', error="invalid_token"' if token else "")
            await _refuse(send, 401, "unauthenticated", "a valid API key is needed: send `Authorization: Bearer "
                          "<token>` (tokens come from `atp keys create`)", [(b"www-authenticate", challenge.encode())])
            return
        scope[KEY_SCOPE] = key
        needed = required_scope(scope["path"])
        if needed is not None and not key.allows(needed):
            DENIED.labels("forbidden").inc()
            await _refuse(send, 403, "forbidden", f"this key has no {needed} scope", [], {"scope": needed})
            return
        limiter: Limiter | None = scope["app"].state.limiter
        verdict = None
        if limiter is not None:
            await limiter.note_use(key)
            verdict = await limiter.take(key)
        if verdict is not None and not verdict.allowed:
            DENIED.labels("rate_limited").inc()
            await _refuse(send, 429, "rate_limited", f"more than {key.rate:g} requests per second (burst "
                          f"{key.burst:g}) for this key; retry after {verdict.retry_after_s} s", verdict.headers(),
                          {"rate_per_s": key.rate, "burst": key.burst})
            return
        if verdict is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_headers(send, verdict))


def _with_headers(send: Any, verdict: Verdict) -> Any:
    extra = verdict.headers()

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


async def _refuse(send: Any, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]],
                  details: Any = None) -> None:
    payload = json.dumps(body(code, message, details)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


def key_of(scope: MutableMapping[str, Any]) -> ApiKey | None:
    key: ApiKey | None = scope.get(KEY_SCOPE)
    return key
