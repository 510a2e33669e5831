"""The request-body size limit, enforced before the body is read into memory.

A ``Content-Length`` above the limit is answered 413 at once, without reading the body. A body
without one (chunked) is read here, counting bytes, and refused as soon as the count passes the
limit; so at most the limit (plus one chunk) is ever held, and the app then reads the bytes
buffered here. A request with neither header has no body and passes untouched (the GETs).
"""

from __future__ import annotations

import json
from typing import Any

from serving.errors import body

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: a 1000-key batch is about 60 KiB


class BodyLimit:
    def __init__(self, app: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            try:
                too_large = int(length) > self.limit
            except ValueError:  # the server refuses these before the app; not ours to judge
                too_large = False
            if too_large:
                await self._refuse(send, f"the request body is {int(length)} bytes")
                return
        if not chunked:
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, f"the request body is more than {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _refuse(self, send: Any, what: str) -> None:
        payload = json.dumps(body("body_too_large", f"{what}; the limit is {self.limit} bytes",
                                  {"limit_bytes": self.limit})).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _replay(chunks: list[bytes], pending: dict[str, Any] | None, receive: Any) -> Any:
    """A ``receive`` that gives the body read so far as one message, then the server's messages."""
    first: list[dict[str, Any]] = [pending] if pending is not None else [
        {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replayed() -> dict[str, Any]:
        return first.pop() if first else await receive()

    return replayed
