"""``/docs``: Swagger UI from assets installed with the package (``swagger-ui-bundle``), not a CDN,
so the page works on a machine without internet; ``ATP_API_DOCS=false`` turns it and the OpenAPI
document off. The page describes the API and holds no data; its "Authorize" button takes a key's
token for the "Try it out" calls (which the API then checks like any other).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"
REFUSALS = {"401": "No API key, or an unknown, revoked, rotated-out or expired one (unauthenticated)",
            "403": "The key lacks the route's scope, or may not read this location or group (forbidden)",
            "429": "The key's rate is used up (rate_limited; Retry-After), or a batch costs more than its burst "
                   "(batch_over_burst)"}


def install(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")


def bearer_scheme(app: FastAPI) -> None:
    """The OpenAPI document says every route but the health checks takes a bearer token."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A token from `atp keys create`"}}
            for path, ops in schema.get("paths", {}).items():
                if path in ("/healthz", "/readyz"):
                    continue
                for op in ops.values():
                    op["security"] = [{"apiKey": []}]
                    responses = op.setdefault("responses", {})
                    for status, what in REFUSALS.items():
                        responses.setdefault(status, {"description": what, "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
