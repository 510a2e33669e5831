"""API metrics, labelled by route template (never by SKU), and the access log, via a plain ASGI middleware.

The access log (logger ``atp.access``, INFO) writes one ``key=value`` line per request: the API key's
name (``-`` without one), method, route template, status, latency and, for a batch, its item count.
Never the token, never a SKU or location (they are in the path, which is not logged).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ACCESS = logging.getLogger("atp.access")

REQUESTS = Counter("atp_api_requests_total", "API requests by route template and status.", ["route", "status"])
LATENCY = Histogram(
    "atp_api_request_seconds", "API request latency by route template.", ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)


class MetricsMiddleware:
    def __init__(self, app: Any, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            REQUESTS.labels(label, str(status[0])).inc()
            LATENCY.labels(label).observe(elapsed)
            if self.access_log and ACCESS.isEnabledFor(logging.INFO):
                key = scope.get("atp.key")
                ACCESS.info("access key=%s method=%s route=%s status=%s ms=%.2f items=%s",
                            key.name if key is not None else "-", scope["method"], label, status[0],
                            elapsed * 1000, scope.get("atp.items", 1))


def multiprocess_dir(path: Path) -> None:
    """Several API processes: each counts into files under ``path`` (emptied first) and a scrape of any
    of them sums all. Call before the processes start; they inherit the environment variable."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[_MULTIPROC_ENV] = str(path)


def exposition() -> bytes:
    if os.environ.get(_MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        return generate_latest(registry)
    return generate_latest()
